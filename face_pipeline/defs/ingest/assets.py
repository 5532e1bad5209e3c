"""face_detections → face_embeddings, one partition per photo batch. Bodies call core.ingest and report."""


import dagster as dg

from face_pipeline.core import ingest
from face_pipeline.core.progress import report_progress
from face_pipeline.core.sync import sync_payloads
from face_pipeline.defs.ingest.partitions import photo_batches
from face_pipeline.defs.resources import FacePipelineResource

from face_pipeline.defs.pools import INGEST_POOL, vector_write_pool  # issue 11: pools
from face_pipeline.runs import QDRANT_POOL  # noqa: F401  (re-exported: the assets of other modules use it)
from face_pipeline.settings import Settings


def _failures_table(failures: list[tuple[str, str]], limit: int = 50) -> str:
    if not failures:
        return "none"
    rows = "\n".join(f"| `{path}` | {reason} |" for path, reason in failures[:limit])
    more = f"\n\n… and {len(failures) - limit} more" if len(failures) > limit else ""
    return f"| photo | reason |\n|---|---|\n{rows}{more}"


def _progress(context: dg.AssetExecutionContext, what: str):
    def report(done: int, total: int) -> None:
        report_progress(what, done, total)
        if done == total or done % 100 == 0:
            context.log.info(f"{what}: {done}/{total}")

    return report


@dg.asset(
    partitions_def=photo_batches,
    group_name="ingest",
    kinds={"python", "onnx", "sql"},
    pool=INGEST_POOL,  # issue 11: batches detect in parallel, as many as the face_ingest pool allows
    description="Every face in the batch's photos: boxes, landmarks, detector score; bad photos recorded with a reason.",
)
def face_detections(context: dg.AssetExecutionContext, face_pipeline: FacePipelineResource) -> dg.MaterializeResult:
    settings = face_pipeline.settings()
    rep = ingest.detect_batch(settings, context.partition_key, face_pipeline.models(), _progress(context, "photos"))
    return dg.MaterializeResult(
        metadata={
            "photos": int(rep.photos),
            "faces": int(rep.faces),
            "photos_with_faces": int(rep.ok),
            "photos_without_faces": int(rep.no_faces),
            "duplicates": int(rep.duplicates),
            "failures": int(rep.failed),
            "failure_reasons": dg.MetadataValue.md(_failures_table(rep.failures)),
            "skipped_files": dg.MetadataValue.json(rep.skipped),
            "faces_removed": int(rep.faces_removed),
            "photos_per_s": round(rep.photos_per_s, 2),
            "seconds": round(rep.seconds, 2),
        }
    )


@dg.asset(
    partitions_def=photo_batches,
    deps=[face_detections],
    group_name="ingest",
    kinds={"python", "onnx", "qdrant"},
    # issue 11: writes the vector store — one at a time in Qdrant local mode, in parallel on a server (defs/pools.py)
    pool=vector_write_pool(Settings()),
    description="512-d ArcFace embedding and quality score of every face of the batch, in Qdrant and the batch's "
    "embedding file (new_faces_organized, requested when the ingest run succeeds, then places the new faces).",
)
def face_embeddings(context: dg.AssetExecutionContext, face_pipeline: FacePipelineResource) -> dg.MaterializeResult:
    settings = face_pipeline.settings()
    with face_pipeline.vector_store() as store:
        rep = ingest.embed_batch(settings, context.partition_key, face_pipeline.models(), store, _progress(context, "faces"))
        sync_payloads(settings, store)
    return dg.MaterializeResult(
        metadata={
            "faces": int(rep.faces),
            "faces_per_s": round(rep.faces_per_s, 2),
            "mean_quality": round(rep.mean_quality, 3),
            "low_quality_faces": int(rep.low_quality),
            "model": rep.model,
            "seconds": round(rep.seconds, 2),
        }
    )


ingest_job = dg.define_asset_job(
    "ingest_batch",
    selection=[face_detections, face_embeddings],
    description="Detect and embed one photo batch.",
)
