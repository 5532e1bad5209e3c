"""Sensors: new photo batches in the inbox, and label changes that call for re-assignment and re-clustering."""

import json
from pathlib import Path

import dagster as dg

from face_pipeline.core.inbox import discover_batches
from face_pipeline.core.errors import FacePipelineError
from face_pipeline.core.ingest import batch_for_folder
from face_pipeline.core.organize import human_label_changes_since
from face_pipeline.defs.organize.assets import organize_job
from face_pipeline.defs.ingest.assets import ingest_job
from face_pipeline.defs.ingest.incremental import organize_new_faces_job
from face_pipeline.defs.ingest.partitions import photo_batches
from face_pipeline.defs.resources import FacePipelineResource
from face_pipeline.home import prepare_home
from face_pipeline.runs import recover_dead_runs


@dg.sensor(job=ingest_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Each sub-folder of FACE_PHOTOS_INBOX is a batch: new or changed folders are ingested.")
def photo_inbox_sensor(context: dg.SensorEvaluationContext, face_pipeline: FacePipelineResource) -> dg.SensorResult:
    settings = face_pipeline.settings()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}  # folder path → fingerprint
    found = {str(folder): fp for folder, fp in discover_batches(settings.inbox_dir).values()}
    changed = {folder: fp for folder, fp in found.items() if seen.get(folder) != fp}
    if not changed:
        return dg.SensorResult(skip_reason=f"no new or changed folders in {settings.inbox_dir}", cursor=context.cursor)
    prepare_home(settings, set_dagster_home=False)
    existing = set(context.instance.get_dynamic_partitions(photo_batches.name))
    requests, skipped = [], []
    for folder, fp in sorted(changed.items()):
        try:  # the folder's own batch (a batch is its folder: two folders named alike get distinct names)
            name = batch_for_folder(settings, Path(folder))
        except FacePipelineError as exc:  # one odd folder must not stop the others
            context.log.warning(f"inbox folder {folder} skipped: {exc}")
            skipped.append(folder)
            continue
        requests.append(dg.RunRequest(partition_key=name, run_key=f"{name}:{fp}"))
    new_names = sorted({r.partition_key for r in requests} - existing)
    seen.update(changed)
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[photo_batches.build_add_request(new_names)] if new_names else [],
        cursor=json.dumps(seen, sort_keys=True),
    )


@dg.sensor(job=organize_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="A person labelled, merged, split, moved or rejected faces: re-assign and re-cluster. "
           "Cursor = id of the newest event seen; events written by the pipeline itself are ignored.")
def label_change_sensor(context: dg.SensorEvaluationContext, face_pipeline: FacePipelineResource) -> dg.SensorResult:
    settings = face_pipeline.settings()
    prepare_home(settings, set_dagster_home=False)
    last = int(context.cursor or 0)
    changes, newest = human_label_changes_since(settings, last)
    if not changes:
        return dg.SensorResult(skip_reason=f"no label changes after event {last}", cursor=str(max(last, newest)))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"labels-through-{newest}", tags={"face_pipeline/trigger": "labels"})],
        cursor=str(newest),
    )


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Runs of this host whose process died (kill -9, OOM, power cut) are marked failed and their "
           "face_library pool slots freed, so the queue and later runs are never blocked by them.")
def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    recovered = recover_dead_runs(context.instance)
    for rec in recovered:
        context.log.warning(rec.describe())
    return dg.SkipReason(f"recovered {len(recovered)} dead run(s)" if recovered else "no dead runs")


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[ingest_job], request_job=organize_new_faces_job,
                      minimum_interval_seconds=10, default_status=dg.DefaultSensorStatus.RUNNING,
                      description="An ingest run succeeded: organise its batch's new faces in a small run of their own.")
def organize_after_ingest(context: dg.RunStatusSensorContext):
    batch = context.dagster_run.tags.get("dagster/partition")
    if not batch:
        return dg.SkipReason(f"run {context.dagster_run.run_id[:8]} has no batch")
    return dg.RunRequest(run_key=f"organize-new-faces:{context.dagster_run.run_id}", partition_key=batch,
                         tags={"face_pipeline/trigger": "ingest", "face_pipeline/ingest_run": context.dagster_run.run_id})
