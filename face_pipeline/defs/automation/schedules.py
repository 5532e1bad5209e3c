"""The nightly refresh at 02:00: full re-assignment and re-clustering; retraining when labels changed."""

import dagster as dg

from face_pipeline.core.heads import labels_changed_since_training
from face_pipeline.defs.organize.assets import supervised_assignments, unknown_clusters
from face_pipeline.defs.training.assets import projection_head, reembedded_faces
from face_pipeline.defs.resources import FacePipelineResource
from face_pipeline.home import prepare_home

ORGANIZE_KEYS = [supervised_assignments.key, unknown_clusters.key]
TRAINING_KEYS = [projection_head.key, reembedded_faces.key]

nightly_job = dg.define_asset_job(
    "nightly_refresh_job",
    selection=[supervised_assignments, unknown_clusters, projection_head, reembedded_faces],
    description="Nightly: re-assign, re-cluster, and retrain when labels changed since the last head.",
    tags={"face_pipeline/exclusive": "true"},
)


@dg.schedule(job=nightly_job, cron_schedule="0 2 * * *", default_status=dg.DefaultScheduleStatus.RUNNING,
             description="Every night at 02:00: re-assign and re-cluster; retrain the projection head if labels changed.")
def nightly_refresh(context: dg.ScheduleEvaluationContext, face_pipeline: FacePipelineResource):
    settings = face_pipeline.settings()
    prepare_home(settings, set_dagster_home=False)
    retrain = labels_changed_since_training(settings)
    keys = ORGANIZE_KEYS + (TRAINING_KEYS if retrain else [])
    return dg.RunRequest(
        run_key=None,
        asset_selection=keys,
        tags={"face_pipeline/retrain": str(retrain).lower()},
    )
