"""The Dagster code location: assets, jobs, sensors, schedules and the one resource.

Runs execute in one process (``in_process_executor``): the Qdrant local folder admits one process, and a
multi-process executor would open it from every step.
"""

import dagster as dg

from face_pipeline.defs.assets.ingest import face_detections, face_embeddings, ingest_job
from face_pipeline.defs.resources import FacePipelineResource
from face_pipeline.defs.sensors import photo_inbox_sensor
from face_pipeline.settings import disable_telemetry

disable_telemetry()

defs = dg.Definitions(
    assets=[face_detections, face_embeddings],
    jobs=[ingest_job],
    sensors=[photo_inbox_sensor],
    resources={"face_pipeline": FacePipelineResource()},
    executor=dg.in_process_executor,
)
