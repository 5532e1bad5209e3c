"""new_faces_organized: a freshly ingested batch's faces joined to known people and existing unknown clusters.

Its own small run, requested by ``organize_after_ingest`` (defs/automation/sensors.py) when an ingest run succeeds — not a
step of the ingest run, so ingest runs of different batches stay independent (the incremental step reads and
writes library-wide state: people and clusters). The full re-assignment and re-clustering stay nightly and on
label changes.
"""

import dagster as dg
from sqlalchemy import select

from face_pipeline.core import organize
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import FaceInstance
from face_pipeline.core.sync import sync_payloads
from face_pipeline.defs.ingest.assets import face_embeddings
from face_pipeline.defs.ingest.partitions import photo_batches
from face_pipeline.defs.resources import FacePipelineResource
from face_pipeline.runs import QDRANT_POOL


def _batch_face_ids(settings, batch: str) -> list[str]:
    with session_scope(settings.sql_url) as s:
        return list(s.scalars(select(FaceInstance.face_id).where(FaceInstance.batch == batch, FaceInstance.embedded.is_(True))
                              .order_by(FaceInstance.face_id)))


@dg.asset(
    partitions_def=photo_batches,
    deps=[face_embeddings],
    group_name="ingest",
    kinds={"python", "sql"},
    pool=QDRANT_POOL,
    description="The batch's new faces assigned to known people, or joined to existing unknown clusters; the rest "
    "wait for the next full clustering. Requested automatically after every successful ingest.",
)
def new_faces_organized(context: dg.AssetExecutionContext, face_pipeline: FacePipelineResource) -> dg.MaterializeResult:
    settings = face_pipeline.settings()
    inc = organize.organize_new_faces(settings, _batch_face_ids(settings, context.partition_key))
    with face_pipeline.vector_store() as store:
        synced = sync_payloads(settings, store)
    context.log.info(f"{inc.new_faces} new faces: {inc.assigned} joined known people, {inc.joined_clusters} joined unknown "
                     f"clusters, {inc.new_clusters} new unknown clusters formed, {inc.noise} alone")
    return dg.MaterializeResult(
        metadata={
            "new_faces": inc.new_faces,
            "assigned_to_known_people": inc.assigned,
            "joined_unknown_clusters": inc.joined_clusters,
            "new_unknown_clusters": inc.new_clusters,
            "still_unknown": inc.noise,
            "qdrant_payloads_synced": synced,
            "seconds": round(inc.seconds, 2),
        }
    )


organize_new_faces_job = dg.define_asset_job(
    "organize_new_faces",
    selection=[new_faces_organized],
    description="Join one freshly ingested batch's faces to known people and existing unknown clusters.",
)
