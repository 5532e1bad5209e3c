"""The ingest assets materialised by real Dagster instances (SQLite-backed for tests, PostgreSQL-backed like
production), plus the code location and the production dagster.yaml."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select

from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import FaceInstance, Photo
from face_pipeline.core.ingest import register_batch
from face_pipeline.core.samples import sample_photo_paths
from face_pipeline.core.vectors import FaceVectorStore, open_vector_client
from face_pipeline.defs.ingest.assets import face_detections, face_embeddings
from face_pipeline.defs.ingest.partitions import photo_batches
from face_pipeline.defs.resources import FacePipelineResource
from face_pipeline.home import prepare_home
from face_pipeline.settings import Settings
from face_pipeline_tests.conftest import REPO_ROOT, copy_photos, lfw_people

BATCH = "2024-06_family"


@pytest.fixture
def batch_folder(tmp_path, faces_dev) -> Path:
    """Four faces_dev photos, t1.jpg (6 faces) and one broken file."""
    people = lfw_people(faces_dev, n=2, per_person=2)
    folder = tmp_path / "photos" / BATCH
    copy_photos([p for ps in people.values() for p in ps], folder)
    copy_photos([p for p in sample_photo_paths() if p.name == "t1.jpg"], folder, prefix_person=False)
    (folder / "broken.jpg").write_text("not a jpeg")
    return folder


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    mats = result.asset_materializations_for_node(node)
    assert len(mats) == 1
    assert mats[0].partition == BATCH
    return {k: v.value for k, v in mats[0].metadata.items()}


def _materialize(instance, home: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [face_detections, face_embeddings],
        partition_key=BATCH,
        instance=instance,
        resources={"face_pipeline": FacePipelineResource(home=str(home))},
    )


def _counts(settings: Settings) -> tuple[int, int, int]:
    with session_scope(settings.sql_url) as s:
        photos = s.scalar(select(func.count()).select_from(Photo))
        faces = s.scalar(select(func.count()).select_from(FaceInstance))
    with open_vector_client(settings) as client:
        points = FaceVectorStore(client, settings.qdrant_collection).count()
    return photos, faces, points


def test_definitions_load():
    from face_pipeline.definitions import defs

    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("ingest_batch")
    assert job.partitions_def == photo_batches
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {"face_detections", "face_embeddings"}
    sensor = defs.resolve_sensor_def("photo_inbox_sensor")
    assert sensor.job_name == "ingest_batch"
    graph = defs.resolve_asset_graph()
    assert graph.get(face_embeddings.key).parent_keys == {face_detections.key}
    assert graph.get(face_embeddings.key).pools == {"face_library"}  # local mode: one Qdrant writer (issue 11)


def test_materialize_a_batch_partition_and_rematerialize(settings, batch_folder, dagster_instance):
    instance = dagster_instance
    register_batch(settings, BATCH, batch_folder)
    instance.add_dynamic_partitions(photo_batches.name, [BATCH])
    result = _materialize(instance, settings.home_dir)
    assert result.success
    det = _metadata(result, "face_detections")
    assert det["photos"] == 6 and det["failures"] == 1 and det["photos_with_faces"] == 5
    assert det["faces"] >= 10  # t1's six plus at least one per faces_dev photo
    assert "broken.jpg" in det["failure_reasons"] and "not an image" in det["failure_reasons"]
    assert det["photos_per_s"] > 0
    emb = _metadata(result, "face_embeddings")
    assert emb["faces"] == det["faces"] and emb["model"] == "w600k_mbf" and 0 < emb["mean_quality"] <= 1
    first = _counts(settings)
    assert first == (6, det["faces"], det["faces"])

    again = _materialize(instance, settings.home_dir)  # same partition again: replaces, never duplicates
    assert again.success
    assert _metadata(again, "face_detections")["faces"] == det["faces"]
    assert _counts(settings) == first

    # the instance's event log holds both materialisations of each asset, for this partition
    for asset in (face_detections, face_embeddings):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset.key, asset_partitions=[BATCH]), limit=10
        ).records
        assert len(records) == 2
        assert all(r.event_log_entry.dagster_event.partition == BATCH for r in records)
    latest = instance.get_latest_materialization_event(face_detections.key)
    assert latest.asset_materialization.metadata["faces"].value == det["faces"]
    assert len(instance.get_runs()) == 2
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_runs())

    # a partition nobody registered fails the run with a message that says what to do
    instance.add_dynamic_partitions(photo_batches.name, ["never_registered"])
    bad = dg.materialize([face_detections], partition_key="never_registered", instance=instance,
                         resources={"face_pipeline": FacePipelineResource(home=str(settings.home_dir))},
                         raise_on_error=False)
    assert not bad.success
    error = next(e for e in bad.all_events if e.is_step_failure).step_failure_data.error
    messages = [error.message] + ([error.cause.message] if error.cause else [])
    assert any("is not registered" in m and "face-pipeline ingest" in m for m in messages), messages
    assert _counts(settings) == first


def test_materialize_on_a_postgres_backed_instance(home, batch_folder, pg_database, monkeypatch, fast_tmp):
    _, dagster_url = pg_database()
    _, data_url = pg_database()
    monkeypatch.setenv("DATABASE_URL", data_url)  # the pipeline's own tables on PostgreSQL too, as in production
    settings = Settings(home=home)
    assert settings.sql_url == data_url
    prepare_home(settings, set_dagster_home=False)
    register_batch(settings, BATCH, batch_folder)
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": dagster_url}}},
                              temp_dir=str(fast_tmp)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        instance.add_dynamic_partitions(photo_batches.name, [BATCH])
        result = _materialize(instance, home)
        assert result.success
        det = _metadata(result, "face_detections")
        assert det["photos"] == 6 and det["failures"] == 1
        assert _counts(settings) == (6, det["faces"], det["faces"])
        assert instance.get_dynamic_partitions(photo_batches.name) == [BATCH]
        assert len(instance.fetch_materializations(face_embeddings.key, limit=5).records) == 1


def test_production_dagster_yaml_instantiates_against_postgres(tmp_path, pg_database, monkeypatch):
    name, _ = pg_database()
    config_dir = tmp_path / "prod_dagster_home"
    config_dir.mkdir()
    shutil.copyfile(REPO_ROOT / "deploy" / "dagster.yaml", config_dir / "dagster.yaml")
    for key, value in {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USERNAME": "postgres",
                       "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": name}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DAGSTER_HOME", str(config_dir))

    instance = dg.DagsterInstance.from_config(str(config_dir))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert instance.run_storage._engine.dialect.driver == "psycopg2"  # the scheme from the yaml
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1  # unsized pools: one step (issue 11)

        @dg.asset
        def tiny() -> int:
            return 1

        result = dg.materialize([tiny], instance=instance)  # runs and event log written to PostgreSQL
        assert result.success
        assert [r.run_id for r in instance.get_runs()] == [result.run_id]
        assert instance.get_latest_materialization_event(tiny.key) is not None
        instance.add_dynamic_partitions(photo_batches.name, ["a", "b"])
        assert instance.get_dynamic_partitions(photo_batches.name) == ["a", "b"]
    finally:
        instance.dispose()
