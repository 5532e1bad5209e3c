"""Sensors: new photo batches in the inbox, and label changes that call for re-assignment and re-clustering."""

import json

import dagster as dg

from face_pipeline.core.inbox import discover_batches
from face_pipeline.core.ingest import register_batch
from face_pipeline.core.organize import human_label_changes_since
from face_pipeline.defs.organize.assets import organize_job
from face_pipeline.defs.ingest.assets import ingest_job
from face_pipeline.defs.ingest.partitions import photo_batches
from face_pipeline.defs.resources import FacePipelineResource
from face_pipeline.home import prepare_home


@dg.sensor(job=ingest_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Each sub-folder of FACE_PHOTOS_INBOX is a batch: new or changed folders are ingested.")
def photo_inbox_sensor(context: dg.SensorEvaluationContext, face_pipeline: FacePipelineResource) -> dg.SensorResult:
    settings = face_pipeline.settings()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    found = discover_batches(settings.inbox_dir)
    changed = {name: (folder, fp) for name, (folder, fp) in found.items() if seen.get(name) != fp}
    if not changed:
        return dg.SensorResult(skip_reason=f"no new or changed folders in {settings.inbox_dir}", cursor=context.cursor)
    prepare_home(settings, set_dagster_home=False)
    existing = set(context.instance.get_dynamic_partitions(photo_batches.name))
    for name, (folder, _) in changed.items():
        register_batch(settings, name, folder)
    new_names = sorted(n for n in changed if n not in existing)
    seen.update({name: fp for name, (_, fp) in changed.items()})
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=name, run_key=f"{name}:{fp}") for name, (_, fp) in sorted(changed.items())],
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
