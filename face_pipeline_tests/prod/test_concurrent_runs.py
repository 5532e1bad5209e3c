"""Concurrent runs on the production instance (issue 11), for real: PostgreSQL for the face library and for
Dagster's storage, ``dagster-daemon`` running the inbox sensor, the run queue and the pools, each run in its own
process (DefaultRunLauncher), Qdrant in local mode behind the pool of 1.

Four batches land in the inbox at once; while their runs go, a person labels faces. Afterwards: every batch was
ingested once, no face duplicated or lost, every label kept, SQL and the vector store agree.

Runs in CI when PostgreSQL is reachable (skips and says so otherwise): 12 small photos, a few minutes on 2 cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
from dagster import DagsterRunStatus
from sqlalchemy import select

from face_pipeline.core.consistency import vector_store_disagreements
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import FaceInstance, Photo
from face_pipeline.core.labels.commands import label_face
from face_pipeline.core.sync import try_sync_payloads
from face_pipeline.core.vectors import FaceVectorStore, open_vector_client
from face_pipeline.defs.pools import INGEST_POOL, LIBRARY_POOL
from face_pipeline.home import prepare_home
from face_pipeline.settings import Settings
from face_pipeline_tests.conftest import PG_HOST, PG_PORT, PG_USER, REPO_ROOT, copy_photos, lfw_people

BATCHES = 4
PHOTOS_PER_BATCH = 3
DEADLINE_S = float(os.environ.get("FACE_CONCURRENCY_TEST_TIMEOUT", 600))
IN_FLIGHT = (DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
             DagsterRunStatus.CANCELING)


def _daemon_env(dagster_home: Path, app_url: str, dagster_db: str, home: Path, inbox: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACE_", "DAGSTER_"))}
    env.update(
        DAGSTER_HOME=str(dagster_home), DAGSTER_PG_HOST=PG_HOST, DAGSTER_PG_PORT=str(PG_PORT), DAGSTER_PG_USERNAME=PG_USER,
        DAGSTER_PG_PASSWORD="", DAGSTER_PG_DB=dagster_db, DATABASE_URL=app_url, FACE_PIPELINE_HOME=str(home),
        FACE_PHOTOS_INBOX=str(inbox), FACE_KEEP_DAGSTER_HOME="1", ORT_DISABLE_TELEMETRY="1", DAGSTER_DISABLE_TELEMETRY="1",
        FACE_THREADS="1",  # several runs share 2 cores
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
    )
    return env


def test_four_batches_and_labels_at_once_on_the_production_instance(tmp_path, pg_database, faces_dev, monkeypatch):
    _, app_url = pg_database()
    dagster_db, _ = pg_database()
    home, inbox, dagster_home = tmp_path / "home", tmp_path / "inbox", tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
    (dagster_home / "workspace.yaml").write_text(
        "load_from:\n  - python_module:\n      module_name: face_pipeline.definitions\n      location_name: face_pipeline\n")
    env = _daemon_env(dagster_home, app_url, dagster_db, home, inbox)
    for k, v in env.items():
        if k.startswith(("FACE_", "DAGSTER_")) or k == "DATABASE_URL":
            monkeypatch.setenv(k, v)
    settings = Settings()
    assert settings.sql_url == app_url and settings.qdrant_url is None  # PostgreSQL app DB, Qdrant local mode
    prepare_home(settings, set_dagster_home=False)

    people = lfw_people(faces_dev, BATCHES * PHOTOS_PER_BATCH, 1)
    paths = [ps[0] for ps in people.values()]
    batches = [f"batch{b}" for b in range(BATCHES)]
    with dg.DagsterInstance.get() as instance:
        # as docker/compose.yaml's pool-* services do; explicit limits avoid dagster-io/dagster#33552 (two runs
        # lazily creating one default-limit pool row on PostgreSQL: one crashes — seen here before this line existed)
        instance.event_log_storage.set_concurrency_slots(INGEST_POOL, 2)
        instance.event_log_storage.set_concurrency_slots(LIBRARY_POOL, 1)
    for b, name in enumerate(batches):  # all four folders appear together
        copy_photos(paths[b * PHOTOS_PER_BATCH : (b + 1) * PHOTOS_PER_BATCH], tmp_path / "staging" / name)
    (tmp_path / "staging").rename(inbox)

    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(dagster_home / "workspace.yaml")],
        env=env, cwd=tmp_path, stdout=open(tmp_path / "daemon.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    labelled: dict[str, str] = {}
    try:
        deadline = time.monotonic() + DEADLINE_S
        with dg.DagsterInstance.get() as instance:
            while True:
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                assert time.monotonic() < deadline, _runs_summary(instance) + (tmp_path / "daemon.log").read_text()[-3000:]
                if len(labelled) < 2:  # label while runs are going: as soon as some faces are embedded
                    with session_scope(settings.sql_url) as s:
                        ready = list(s.scalars(select(FaceInstance.face_id).where(FaceInstance.embedded.is_(True))
                                               .order_by(FaceInstance.face_id).limit(4)))
                    for fid in ready[len(labelled) : 2]:
                        name = f"Person {len(labelled)}"
                        label_face(settings, fid, name)
                        labelled[fid] = name
                runs = instance.get_runs()
                ingest = [r for r in runs if r.job_name == "ingest_batch"]
                done = Counter(r.tags.get("dagster/partition") for r in ingest if r.status == DagsterRunStatus.SUCCESS)
                if len(labelled) == 2 and set(done) == set(batches) and not any(r.status in IN_FLIGHT for r in runs):
                    time.sleep(35)  # one more label-sensor interval: a run it starts must finish before we look
                    if not any(r.status in IN_FLIGHT for r in instance.get_runs()):
                        break
                time.sleep(3)
            runs = instance.get_runs()
            failed = [r for r in runs if r.status == DagsterRunStatus.FAILURE]
            assert not failed, _runs_summary(instance)
            ingest = [r for r in runs if r.job_name == "ingest_batch"]
            # every batch ingested once: one successful run and one materialisation of its embeddings each
            assert sorted(r.tags["dagster/partition"] for r in ingest) == batches, _runs_summary(instance)
            for name in batches:
                mats = instance.fetch_materializations(
                    dg.AssetRecordsFilter(asset_key=dg.AssetKey("face_embeddings"), asset_partitions=[name]), limit=10).records
                assert len(mats) == 1, name
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(10)

    with session_scope(settings.sql_url) as s:
        photos = Counter(s.scalars(select(Photo.batch)))
        faces = s.execute(select(FaceInstance.face_id, FaceInstance.batch, FaceInstance.embedded, FaceInstance.person_id,
                                 FaceInstance.assignment_source)).all()
    assert photos == {name: PHOTOS_PER_BATCH for name in batches}  # no photo lost or doubled
    assert all(f.embedded for f in faces) and len(faces) >= BATCHES * PHOTOS_PER_BATCH  # every face embedded
    assert len({f.face_id for f in faces}) == len(faces)
    # every label kept: the labelled faces still hold their person, as a human label
    by_id = {f.face_id: f for f in faces}
    for fid in labelled:
        assert by_id[fid].person_id is not None and by_id[fid].assignment_source == "manual", by_id[fid]
    assert len({by_id[f].person_id for f in labelled}) == 2
    # SQL and the vector store agree (payload changes the last run did not push are pushed now, as any run would)
    try_sync_payloads(settings)
    with open_vector_client(settings) as client:
        report = vector_store_disagreements(settings, FaceVectorStore(client, settings.qdrant_collection))
    assert report.agree and report.qdrant_points == len(faces) and report.pending_sync == 0, report.as_metadata()


def _runs_summary(instance) -> str:
    return "\n".join(f"{r.run_id[:8]} {r.job_name} {r.tags.get('dagster/partition', '')} {r.status.value}"
                     for r in instance.get_runs())
