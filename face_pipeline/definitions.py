"""The Dagster code location: assets, checks, jobs, sensors, schedules and the one resource.

Runs execute in one process (``in_process_executor``): the Qdrant local folder admits one process, and a
multi-process executor would open it from every step.
"""

import dagster as dg

from face_pipeline.defs.assets.clustering import (
    library_copies_agree,
    no_person_twice_in_a_photo,
    organize_job,
    sql_and_qdrant_agree,
    supervised_assignments,
    unknown_clusters,
)
from face_pipeline.defs.assets.ingest import face_detections, face_embeddings, ingest_job
from face_pipeline.defs.assets.training import head_not_worse_than_raw, projection_head, reembedded_faces, training_job
from face_pipeline.defs.resources import FacePipelineResource
from face_pipeline.defs.schedules import nightly_job, nightly_refresh
from face_pipeline.defs.assets.incremental import new_faces_organized, organize_new_faces_job
from face_pipeline.defs.sensors import dead_run_sensor, label_change_sensor, organize_after_ingest, photo_inbox_sensor
from face_pipeline.settings import disable_telemetry

disable_telemetry()

defs = dg.Definitions(
    assets=[face_detections, face_embeddings, new_faces_organized, supervised_assignments, unknown_clusters, projection_head, reembedded_faces],
    asset_checks=[no_person_twice_in_a_photo, sql_and_qdrant_agree, library_copies_agree, head_not_worse_than_raw],
    jobs=[ingest_job, organize_new_faces_job, organize_job, training_job, nightly_job],
    sensors=[photo_inbox_sensor, label_change_sensor, dead_run_sensor, organize_after_ingest],
    schedules=[nightly_refresh],
    resources={"face_pipeline": FacePipelineResource()},
    executor=dg.in_process_executor,
)
