"""Shared fixtures: real models (loaded once per session), a private FACE_PIPELINE_HOME per test, the labelled
faces_dev photos, and fresh PostgreSQL databases on the local server when one is reachable.

Nothing here is mocked: tests run the real ONNX models, real SQL (SQLite and PostgreSQL), Qdrant local mode in
temporary folders and real Dagster instances.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FACES_DEV = Path(os.environ.get("FACE_DEV_DATA") or Path(__file__).resolve().parents[1].parent / "shared/data/faces_dev")
FACES_DEV_SKIP = f"faces_dev photos not found at {FACES_DEV} (set FACE_DEV_DATA to the folder of <Person>/<photo> files)"

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
PG_SKIP = "PostgreSQL not reachable at 127.0.0.1:5432 — PostgreSQL tests skipped"

_state: dict[str, object] = {}


# --------------------------------------------------------------------------------------------------------------
# faces_dev
# --------------------------------------------------------------------------------------------------------------


def faces_dev_people() -> dict[str, list[Path]]:
    """person → sorted photo paths; skips the calling test when the data set is absent."""
    if not FACES_DEV.is_dir():
        pytest.skip(FACES_DEV_SKIP)
    people = {
        d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for d in sorted(FACES_DEV.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }
    people = {k: v for k, v in people.items() if v}
    if len(people) < 10:
        pytest.skip(f"faces_dev at {FACES_DEV} holds only {len(people)} people")
    return people


@pytest.fixture(scope="session")
def faces_dev() -> dict[str, list[Path]]:
    return faces_dev_people()


def lfw_people(people: dict[str, list[Path]], n: int, per_person: int) -> dict[str, list[Path]]:
    """``n`` people with at least ``per_person`` LFW photos (250×250 news photos), first photos of each."""
    out = {}
    for name, paths in people.items():
        lfw = [p for p in paths if p.name.startswith("lfw_")]
        if len(lfw) >= per_person:
            out[name] = lfw[:per_person]
        if len(out) == n:
            return out
    pytest.skip(f"faces_dev has fewer than {n} people with {per_person} LFW photos")


def copy_photos(paths: list[Path], dest: Path, prefix_person: bool = True) -> list[Path]:
    """Copy photos into a temporary batch folder (``<Person>_<file>``); never into the repository."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        target = dest / (f"{p.parent.name}_{p.name}" if prefix_person else p.name)
        shutil.copyfile(p, target)
        out.append(target)
    return out


# --------------------------------------------------------------------------------------------------------------
# models and homes
# --------------------------------------------------------------------------------------------------------------


def _clear_face_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FACE_") or key in ("DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY"):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """The bundled detector + recogniser, loaded once for the whole session."""
    from face_pipeline.core.models import FaceModels
    from face_pipeline.settings import Settings

    return FaceModels(Settings(home=tmp_path_factory.mktemp("models_home"), model_dir=None))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private FACE_PIPELINE_HOME; other FACE_* settings and DATABASE_URL/QDRANT_URL are cleared."""
    _clear_face_env(monkeypatch)
    h = tmp_path / "home"
    monkeypatch.setenv("FACE_PIPELINE_HOME", str(h))
    # Anything that asks Dagster for "the" instance must never find the developer's real one.
    monkeypatch.setenv("DAGSTER_HOME", str(h / "dagster_home"))
    return h


@pytest.fixture
def settings(home: Path):
    """Settings for the private home, with the folders, SQL schema and embedded Dagster config in place."""
    from face_pipeline.home import prepare_home
    from face_pipeline.settings import Settings

    s = Settings(home=home)
    prepare_home(s, set_dagster_home=False)
    return s


def _fast_base() -> str | None:
    """/dev/shm when usable: Dagster's SQLite storages commit (and fsync) on every event, which on a busy shared
    disk costs seconds per run. Same code, same SQLite, just a RAM-backed folder."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


@pytest.fixture
def fast_tmp() -> Iterator[Path]:
    """A private temporary folder on a RAM-backed filesystem where there is one, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="fp-test-", dir=_fast_base()))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def dagster_instance(fast_tmp):
    """A real, persistent (SQLite-backed) Dagster test instance."""
    import dagster as dg

    with dg.instance_for_test(temp_dir=str(fast_tmp)) as instance:
        yield instance


def run_ingest(settings, models, batch: str, folder: Path | None = None):
    """register (when ``folder`` is given) → detect_batch → embed_batch; returns both reports."""
    from face_pipeline.core import ingest
    from face_pipeline.core.vectors import FaceVectorStore, open_vector_client

    if folder is not None:
        ingest.register_batch(settings, batch, folder)
    det = ingest.detect_batch(settings, batch, models)
    with open_vector_client(settings) as client:
        emb = ingest.embed_batch(settings, batch, models, FaceVectorStore(client, settings.qdrant_collection))
    return det, emb


def main_face(faces, img_shape):
    """The labelled person of a faces_dev photo: the detected face closest to the image centre."""
    h, w = img_shape[:2]
    return min(faces, key=lambda f: ((f.bbox[0] + f.bbox[2]) / 2 - w / 2) ** 2 + ((f.bbox[1] + f.bbox[3]) / 2 - h / 2) ** 2)


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# --------------------------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------------------------


def _announce(config: pytest.Config, line: str) -> None:
    """Print past pytest's output capture, so the line shows in CI logs even with -q."""
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            print(f"\n{line}", flush=True)
    else:
        print(line, flush=True)


def pg_reachable() -> bool:
    if "pg" not in _state:
        try:
            import psycopg2

            conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3)
            conn.close()
            _state["pg"] = True
        except Exception as exc:  # not installed, not running, auth refused: all mean "skip"
            _state["pg"] = False
            _state["pg_error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return bool(_state["pg"])


def skip_without_pg(config: pytest.Config) -> None:
    if pg_reachable():
        return
    print(PG_SKIP)
    if not _state.get("pg_announced"):
        _state["pg_announced"] = True
        _announce(config, f"{PG_SKIP} ({_state.get('pg_error')})")
    pytest.skip(PG_SKIP)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _state.get("pg_announced"):
        terminalreporter.write_line(PG_SKIP)


def _admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5)
    try:
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@pytest.fixture
def pg_database(request) -> Iterator[Callable[[], tuple[str, str]]]:
    """Factory: each call creates a fresh database ``fp_test_<random>`` and returns (name, psycopg2 URL).
    Every database made is dropped after the test (WITH (FORCE): cached engines may still hold connections)."""
    skip_without_pg(request.config)
    made: list[str] = []

    def create() -> tuple[str, str]:
        name = f"fp_test_{uuid.uuid4().hex[:12]}"
        _admin(f'CREATE DATABASE "{name}"')
        made.append(name)
        return name, f"postgresql+psycopg2://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"

    yield create
    for name in made:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
