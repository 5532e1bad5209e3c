"""label_change_sensor and the nightly_refresh schedule, evaluated against a real Dagster test instance and a real
library (the six-person faces_dev library of test_organize_assets, copied into a fresh home per test); the runs
they request are executed and their effect on the library checked."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import pytest
from sqlalchemy import func, select

from face_pipeline.core import labels
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import SOURCE_AUTO, SOURCE_MANUAL, FaceAssignmentEvent, ProjectionHead
from face_pipeline.definitions import defs
from face_pipeline.defs.automation.schedules import ORGANIZE_KEYS, TRAINING_KEYS, nightly_refresh
from face_pipeline.defs.automation.sensors import label_change_sensor
from face_pipeline.settings import Settings
from face_pipeline_tests.defs.test_organize_assets import face_state, label, library_home, metadata, resources, shared_library

ALL_FOUR = {"supervised_assignments", "unknown_clusters", "projection_head", "reembedded_faces"}
NIGHT = datetime(2024, 6, 1, 2, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def lib(tmp_path_factory, faces_dev, models):
    return shared_library(tmp_path_factory, faces_dev, models)


@pytest.fixture
def settings(lib, fast_tmp, monkeypatch) -> Settings:
    return library_home(lib, fast_tmp, monkeypatch)


def _newest_event(settings: Settings) -> int:
    with session_scope(settings.sql_url) as s:
        return int(s.scalar(select(func.max(FaceAssignmentEvent.id))) or 0)


def _tick(instance, settings: Settings, cursor: str | None):
    context = dg.build_sensor_context(instance=instance, resources=resources(settings), cursor=cursor)
    return label_change_sensor.evaluate_tick(context)


def _schedule(instance, settings: Settings) -> dg.RunRequest:
    context = dg.build_schedule_context(instance=instance, resources=resources(settings), scheduled_execution_time=NIGHT)
    data = nightly_refresh.evaluate_tick(context)
    assert data.skip_message is None and len(data.run_requests) == 1, data
    return data.run_requests[0]


def _keys(request: dg.RunRequest) -> set[str]:
    return {k.to_user_string() for k in request.asset_selection}


def test_definitions_wire_the_sensor_and_the_schedule():
    dg.Definitions.validate_loadable(defs)
    sensor = defs.resolve_sensor_def("label_change_sensor")
    assert sensor.job_name == "organize_library"
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    schedule = defs.resolve_schedule_def("nightly_refresh")
    assert schedule.cron_schedule == "0 2 * * *" and schedule.job_name == "nightly_refresh_job"
    job = defs.resolve_job_def("nightly_refresh_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == ALL_FOUR
    assert {k.to_user_string() for k in ORGANIZE_KEYS} | {k.to_user_string() for k in TRAINING_KEYS} == ALL_FOUR
    organize_job = defs.resolve_job_def("organize_library")
    assert {k.to_user_string() for k in organize_job.asset_layer.executable_asset_keys} == {"supervised_assignments", "unknown_clusters"}
    assert {c.name for c in organize_job.asset_layer.asset_graph.asset_check_keys} == {"no_person_twice_in_a_photo", "sql_and_qdrant_agree", "library_copies_agree"}


def test_label_change_sensor_requests_a_reorganisation_for_human_label_changes_only(lib, settings, dagster_instance):
    instance, job = dagster_instance, defs.resolve_job_def("organize_library")
    # the library organised once, as after ingest: four unknown clusters-to-be, nobody named yet
    assert job.execute_in_process(instance=instance, resources=resources(settings)).success
    alice = lib.names[0]
    cluster = face_state(settings)[lib.faces[alice][0]][2]
    assert cluster.startswith("unknown_cluster_")
    assert _newest_event(settings) == 0

    first = _tick(instance, settings, None)  # no events at all
    assert first.run_requests == [] and first.skip_message and first.cursor == "0"

    labels.label_face(settings, lib.faces[alice][0], "Alice", actor="cli")
    newest = _newest_event(settings)
    assert newest > 0
    fired = _tick(instance, settings, first.cursor)
    assert fired.skip_message is None and len(fired.run_requests) == 1
    request = fired.run_requests[0]
    assert fired.cursor == str(newest) and request.run_key == f"labels-through-{newest}"
    assert request.tags.get("face_pipeline/trigger") == "labels"
    assert request.job_name in (None, "organize_library")

    again = _tick(instance, settings, fired.cursor)  # nothing new since
    assert again.run_requests == [] and again.skip_message and again.cursor == str(newest)

    # before the run, Alice's other faces are still an unnamed cluster
    before = face_state(settings)
    assert all(before[f][0] is None and before[f][2] == cluster for f in lib.faces[alice][1:])

    # the run the sensor asked for, as the daemon would launch it
    result = job.execute_in_process(instance=instance, resources=resources(settings), tags=request.tags,
                                    run_config=request.run_config or None)
    assert result.success
    assert metadata(result, "supervised_assignments")["newly_assigned"] >= len(lib.faces[alice]) - 1
    after = face_state(settings)
    assert after[lib.faces[alice][0]][:2] == ("Alice", SOURCE_MANUAL)
    assert all(after[f][:2] == ("Alice", SOURCE_AUTO) for f in lib.faces[alice][1:]), [after[f] for f in lib.faces[alice]]
    assert not any(c == cluster for _, _, c in after.values()), "the named cluster should be gone"
    run = instance.get_run_by_id(result.run_id)
    assert run.job_name == "organize_library" and run.tags.get("face_pipeline/trigger") == "labels"

    # the run wrote events of its own (actor "pipeline"): the sensor must not trigger itself
    after_run = _newest_event(settings)
    with session_scope(settings.sql_url) as s:
        actors = set(s.scalars(select(FaceAssignmentEvent.actor).where(FaceAssignmentEvent.id > newest)))
    assert after_run > newest and actors == {"pipeline"}
    quiet = _tick(instance, settings, again.cursor)
    assert quiet.run_requests == [] and quiet.skip_message and quiet.cursor == str(after_run)

    # another human change (any front end but the pipeline) fires again
    labels.reject_face(settings, lib.faces[alice][-1], actor="web")
    refire = _tick(instance, settings, quiet.cursor)
    assert len(refire.run_requests) == 1 and refire.cursor == str(_newest_event(settings))


def test_nightly_refresh_retrains_only_after_new_human_labels(lib, settings, dagster_instance, monkeypatch):
    instance = dagster_instance
    # the gate needs enough held-out labels to judge a head (training branch: else "not enough labels", no head);
    # this small library reaches it with 5 people x 4 labels and a lowered minimum of held-out faces
    monkeypatch.setenv("FACE_TRAINING_GATE_MIN_TEST_FACES", "3")
    plain = _schedule(instance, settings)  # no labels, no head
    assert _keys(plain) == {"supervised_assignments", "unknown_clusters"}
    assert plain.tags.get("face_pipeline/retrain") == "false"

    label(settings, lib, 4, lib.names[:5], actor="cli")
    retrain = _schedule(instance, settings)
    assert _keys(retrain) == ALL_FOUR and retrain.tags.get("face_pipeline/retrain") == "true"

    # run what the schedule asked for (few epochs: the gate's verdict is not the point here). The code location's
    # own resource is used, as in production: it reads FACE_PIPELINE_HOME, set to this test's home (Dagster refuses
    # a resource override together with an asset subset of a Definitions job).
    assert Settings().home_dir == settings.home_dir
    result = defs.resolve_job_def("nightly_refresh_job").execute_in_process(
        instance=instance, asset_selection=list(retrain.asset_selection),
        tags=retrain.tags, run_config={"ops": {"projection_head": {"config": {"epochs": 3}}}}, raise_on_error=False,
    )
    for node in ("supervised_assignments", "unknown_clusters", "projection_head"):
        assert len(result.asset_materializations_for_node(node)) == 1, node
    head = metadata(result, "projection_head")
    assert head["version"] == 1 and head["epochs"] == 3
    with session_scope(settings.sql_url) as s:
        assert s.scalar(select(func.count()).select_from(ProjectionHead)) == 1
    # reembedded_faces follows the gate: materialised only for a promoted head (blocking check)
    assert bool(result.asset_materializations_for_node("reembedded_faces")) == head["promoted"]
    assert result.success == head["promoted"]

    # the head saw every label: the next night only re-organises
    settled = _schedule(instance, settings)
    assert _keys(settled) == {"supervised_assignments", "unknown_clusters"}
    assert settled.tags.get("face_pipeline/retrain") == "false"
    organize_only = defs.resolve_job_def("nightly_refresh_job").execute_in_process(
        instance=instance, asset_selection=list(settled.asset_selection), tags=settled.tags)
    assert organize_only.success and organize_only.asset_materializations_for_node("projection_head") == []
    assert _keys(_schedule(instance, settings)) == {"supervised_assignments", "unknown_clusters"}  # pipeline events don't count

    # one more human label: retrain tomorrow
    labels.label_face(settings, lib.faces[lib.names[5]][0], lib.names[5], actor="cli")
    assert _keys(_schedule(instance, settings)) == ALL_FOUR
