"""Fault injection: ``ingest`` and ``cluster`` killed with SIGKILL at several points, then run again.

After every crash + re-run: nothing hangs, no face is duplicated or lost, every manual label is kept, and SQL,
the embedding files and Qdrant agree (ids and vectors). The kill comes from the process itself
(``FACE_FAULT_POINT``, see face_pipeline/core/faults.py), exactly where a power cut would hurt most.

CI runs a slice of the points; ``FACE_FAULTS=all`` (or ``python bench/faults.py``) runs every point.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from face_pipeline.core.faults import FAULT_ENV, POINTS
from face_pipeline_tests.conftest import _fast_base, copy_photos, lfw_people

CLI = Path(sys.executable).parent / "face-pipeline"
CI_POINTS = ("embedding", "vector_write", "organize")
SELECTED = POINTS if os.environ.get("FACE_FAULTS") == "all" else CI_POINTS
COMMAND_TIMEOUT = 240  # a hang (the bug: waiting forever for a dead run's pool slot) fails here


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FACE_", "DAGSTER_")) and k not in ("DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY")}
    env.update(FACE_PIPELINE_HOME=str(home), ORT_DISABLE_TELEMETRY="1", DAGSTER_DISABLE_TELEMETRY="1",
               FACE_RUN_WAIT_SECONDS="60", **extra)
    return env


def cli(home: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    extra = {FAULT_ENV: fault} if fault else {}
    return subprocess.run([str(CLI), *args], env=_env(home, **extra), capture_output=True, text=True, timeout=COMMAND_TIMEOUT)


def library_state(home: Path) -> dict:
    """Everything the invariants talk about, read after the CLI has exited."""
    from sqlalchemy import select

    from face_pipeline.core.db import session_scope
    from face_pipeline.core.db.schema import FaceInstance
    from face_pipeline.core.embedding_files import load_embeddings
    from face_pipeline.core.vectors import FaceVectorStore, open_vector_client
    from face_pipeline.settings import Settings

    settings = Settings(home=home)
    with session_scope(settings.sql_url) as s:
        faces = {f.face_id: (f.image_id, f.person_id, f.assignment_source, f.embedded) for f in s.scalars(select(FaceInstance))}
    file_ids, file_vecs = load_embeddings(settings)
    with open_vector_client(settings) as client:
        store = FaceVectorStore(client, settings.qdrant_collection)
        points = {r.face_id: r.vector for r in store.iter_records(with_vectors=True)} if store.exists() else {}
    return {"faces": faces, "files": dict(zip(file_ids, file_vecs)), "points": points}


def dagster_state(home: Path) -> tuple[list, set]:
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    try:
        unfinished = [r.run_id for r in instance.get_runs() if r.status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING)]
        return unfinished, set(instance.event_log_storage.get_concurrency_run_ids())
    finally:
        instance.dispose()


@pytest.fixture(scope="module")
def library(faces_dev):
    """A clean library: 2 people × 2 photos ingested and organised, one face labelled by hand."""
    if not CLI.exists():
        pytest.skip(f"console script {CLI} not installed")
    root = Path(tempfile.mkdtemp(prefix="fp-faults-", dir=_fast_base()))
    home, photos = root / "home", root / "photos" / "party"
    people = lfw_people(faces_dev, n=2, per_person=2)
    copy_photos([p for ps in people.values() for p in ps], photos)
    try:
        for args in (("ingest", str(photos)), ("cluster",)):
            r = cli(home, *args)
            assert r.returncode == 0, (args, r.stdout, r.stderr)
        state = library_state(home)
        labelled = sorted(state["faces"])[0]
        r = cli(home, "label-face", labelled, "Manual Label")
        assert r.returncode == 0, r.stderr
        state = library_state(home)
        assert state["faces"][labelled][2] == "manual"
        yield {"home": home, "photos": photos, "faces": set(state["faces"]), "labelled": labelled,
               "person": state["faces"][labelled][1]}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def assert_intact(lib: dict) -> None:
    state = library_state(lib["home"])
    faces = state["faces"]
    assert set(faces) == lib["faces"], "faces lost or added"
    assert len({(img, fid.rsplit('_face', 1)[1]) for fid, (img, *_rest) in faces.items()}) == len(faces), "duplicate face"
    assert faces[lib["labelled"]][1:3] == (lib["person"], "manual"), "the manual label was not kept"
    assert all(embedded for *_rest, embedded in faces.values()), "faces left un-embedded"
    assert set(state["files"]) == set(faces), "embedding files disagree with SQL"
    assert set(state["points"]) == set(faces), "Qdrant disagrees with SQL"
    for fid in sorted(faces):
        np.testing.assert_allclose(state["points"][fid], state["files"][fid], atol=1e-5)
    unfinished, holders = dagster_state(lib["home"])
    assert not unfinished, f"runs left STARTED: {unfinished}"
    assert not holders, f"pool slots still held by {holders}"


@pytest.mark.parametrize("point", SELECTED)
def test_killed_run_recovers_on_the_next_command(library, point):
    command = ("cluster",) if point == "organize" else ("ingest", str(library["photos"]))
    killed = cli(library["home"], *command, fault=point)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stdout, killed.stderr)
    unfinished, _ = dagster_state(library["home"])
    assert unfinished, "the kill should have left a run STARTED (else this test tests nothing)"

    again = cli(library["home"], *command)  # used to hang forever on the dead run's pool slot
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert "recovered: run" in again.stderr
    if point != "organize":
        assert cli(library["home"], "cluster").returncode == 0
    assert_intact(library)
