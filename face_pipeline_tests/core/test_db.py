"""SQL schema and migrations on both backends: SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import delete, inspect, select, text
from sqlalchemy.exc import IntegrityError

from face_pipeline.core.db import get_engine, normalize_url, session_scope, upgrade
from face_pipeline.core.db.schema import (
    Base,
    FaceAssignmentEvent,
    FaceInstance,
    FaceRejection,
    Person,
    Photo,
    PhotoBatch,
    PipelineState,
    ProjectionHead,
    FacePairConstraint,  # suggestions tables
    SuggestionFace,
    SuggestionRecord,
)
from face_pipeline.core.db.session import MIGRATIONS_DIR


def _alembic_head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg).get_current_head()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'face_pipeline.sqlite'}"
    _name, url = request.getfixturevalue("pg_database")()
    return url


def test_normalize_url():
    assert normalize_url("postgresql://u:p@h:5432/db") == "postgresql+psycopg2://u:p@h:5432/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalize_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    assert normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"  # an explicit driver is kept
    assert normalize_url("sqlite:////tmp/x.sqlite") == "sqlite:////tmp/x.sqlite"
    assert normalize_url("sqlite:///:memory:") == "sqlite:///:memory:"
    # what the engine really uses
    assert get_engine("postgresql://u@127.0.0.1:1/db").dialect.driver == "psycopg2"


def test_upgrade_creates_every_table_and_is_idempotent(db_url):
    upgrade(db_url)
    upgrade(db_url)  # second run: nothing to do, no error
    engine = get_engine(db_url)
    tables = set(inspect(engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert versions == [_alembic_head()]
    # the migrated schema matches the models column for column (migrations and schema.py agree)
    insp = inspect(engine)
    for name, table in Base.metadata.tables.items():
        assert {c["name"] for c in insp.get_columns(name)} == set(table.columns.keys()), name


def _upgrade_in_a_process(url: str, start, results) -> None:
    import traceback

    get_engine(url)  # imports and engine first, so the processes reach the upgrade together
    start.wait()
    try:
        upgrade(url)
        results.put("ok")
    except Exception:  # reported to the test, which shows it
        results.put(traceback.format_exc())


def test_processes_started_together_after_a_package_upgrade_all_find_the_schema_new(db_url):
    """The daemon, a run and a CLI command often start together after the package gained a migration: one
    migrates, the others wait and find nothing to do (each used to run the same step, and all but one failed)."""
    import multiprocessing as mp

    from alembic import command
    from alembic.config import Config

    from face_pipeline.core.db.session import head_revision

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalize_url(db_url).replace("%", "%%"))
    with get_engine(db_url).begin() as conn:  # a library left at the schema before the newest migration
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head-1")
    with get_engine(db_url).connect() as conn:
        before = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert before != head_revision()
    ctx, n = mp.get_context("spawn"), 6
    start, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_upgrade_in_a_process, args=(db_url, start, queue)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == ["ok"] * n, "\n".join(r for r in results if r != "ok")
    with get_engine(db_url).connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head_revision()]


def _insert(conn, table: str, **given) -> None:
    """A row of ``table`` as the database has it now (reflected: the schema of an older revision), its required
    columns filled with plain values."""
    from sqlalchemy import MetaData, Table

    t = Table(table, MetaData(), autoload_with=conn)
    plain = {int: 0, float: 0.0, bool: False, str: "x", dict: {}, list: []}
    row = dict(given)
    for c in t.columns:
        if c.name in row or c.nullable or c.server_default is not None or (c.primary_key and c.autoincrement is not False and c.name == "id"):
            continue
        try:
            kind = c.type.python_type
        except NotImplementedError:
            kind = str
        row[c.name] = datetime(2024, 1, 1, tzinfo=timezone.utc) if kind is datetime else plain.get(kind, "x")
    conn.execute(t.insert(), row)


def test_the_newest_migration_keeps_every_row(db_url):
    """A library at the revision before the newest, with a question, its faces and an answer that points at it:
    upgrading keeps them all. (On SQLite, Alembic alters a table by copying it and dropping the old one; with
    foreign keys on, that drop emptied ``suggestion_faces`` by cascade and cut answers from their question.)"""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalize_url(db_url).replace("%", "%%"))
    with get_engine(db_url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head-1")
    tables = ("photo_batches", "persons", "photos", "face_instances", "suggestions", "suggestion_faces", "face_pair_constraints",
              "face_rejections")
    with get_engine(db_url).begin() as conn:
        _insert(conn, "photo_batches", name="b")
        _insert(conn, "persons", person_id="p1", name="Ann")
        _insert(conn, "photos", image_id="i0", batch="b", path="/p/a.jpg")
        for k in range(3):
            _insert(conn, "face_instances", face_id=f"f{k}", image_id="i0", batch="b", face_index=k, person_id="p1")
        _insert(conn, "suggestions", id=1, kind="face_is_person", status="rejected", fingerprint="fp", person_id="p1")
        _insert(conn, "suggestion_faces", suggestion_id=1, face_id="f0", side=0)
        _insert(conn, "face_pair_constraints", face_id_a="f0", face_id_b="f1", same=False, actor="me", suggestion_id=1)
        _insert(conn, "face_rejections", face_id="f2", person_id="p1")

    def state():
        with get_engine(db_url).connect() as conn:
            return ({t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in tables},
                    conn.execute(text("SELECT suggestion_id FROM face_pair_constraints")).scalar())

    before = state()
    assert all(before[0].values()) and before[1] == 1
    upgrade(db_url)
    assert state() == before
    with get_engine(db_url).connect() as conn:
        if conn.dialect.name == "sqlite":  # and the connection handed back checks references again
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_sqlite_engine_uses_wal_and_foreign_keys(tmp_path):
    url = f"sqlite:///{tmp_path / 'wal.sqlite'}"
    with get_engine(url).connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_rows_of_every_table_round_trip(db_url):
    upgrade(db_url)
    written: set[str] = set()
    with session_scope(db_url) as s:
        rows = [
            PhotoBatch(name="2024-summer", source_dir="/photos/2024-summer"),
            Person(person_id="person_a", name="Ada Lovelace"),
            Person(person_id="person_b", name="Béla Bartók"),  # non-ASCII survives both backends
        ]
        s.add_all(rows)
        s.flush()
        rows += [
            Photo(batch="2024-summer", path="/photos/2024-summer/07/a.jpg", rel_path="07/a.jpg", image_id="abcd" * 4,
                  content_hash="ab" * 32, width=4000, height=3000, status="ok", reason="exif orientation 6 applied", faces=1),
            FaceInstance(face_id="abcdabcdabcdabcd_face0", image_id="abcd" * 4, batch="2024-summer", face_index=0,
                         x1=1.5, y1=2.5, x2=101.5, y2=152.0, landmarks=[[10.0, 20.0]] * 5, det_score=0.87,
                         quality_score=0.61, embedding_norm=22.4, embedding_model="w600k_mbf", embedded=True,
                         person_id="person_a", cluster_id="unknown_cluster_0001", person_confidence=0.72,
                         person_margin=0.11, assignment_source="manual", payload_dirty=True),
            FaceAssignmentEvent(actor="alice", action="assign", face_id="abcdabcdabcdabcd_face0", to_person="person_a",
                                reason="looks like her", details={"score": 0.72, "via": ["cli"]}),
            ProjectionHead(version=1, embedding_model="w600k_mbf", path="/heads/v1.pt", promoted=True, live=False,
                           metrics={"recall@1": 0.93}, last_event_id=1),
            PipelineState(key="next_cluster", value="2"),
        ]
        s.add_all(rows[3:])
        s.flush()
        rows.append(FaceRejection(face_id="abcdabcdabcdabcd_face0", person_id="person_b"))
        s.add(rows[-1])
        # ---- suggestions tables (owner: core.suggestions) ----
        s.add(FaceInstance(face_id="abcdabcdabcdabcd_face1", image_id="abcd" * 4, batch="2024-summer", face_index=1, x1=0, y1=0,
                           x2=50, y2=60, landmarks=[[1.0, 2.0]] * 5, det_score=0.8))
        question = SuggestionRecord(kind="same_person", fingerprint="f" * 64, faces=1, other_faces=1, score=0.3, bar=0.4, priority=1.5)
        s.add(question)
        s.flush()
        rows += [question, SuggestionFace(suggestion_id=question.id, face_id="abcdabcdabcdabcd_face0", side=0),
                 SuggestionFace(suggestion_id=question.id, face_id="abcdabcdabcdabcd_face1", side=1),
                 FacePairConstraint(face_id_a="abcdabcdabcdabcd_face0", face_id_b="abcdabcdabcdabcd_face1", same=False, actor="alice",
                                    suggestion_id=question.id)]
        s.add_all(rows[-3:])
        written = {type(r).__tablename__ for r in rows}
    assert written == set(Base.metadata.tables), "a table without a round-trip check"

    with session_scope(db_url) as s:
        b = s.get(PhotoBatch, "2024-summer")
        assert (b.status, b.photos, b.faces, b.failures) == ("registered", 0, 0, 0)  # defaults applied
        assert b.created_at is not None
        photo = s.scalars(select(Photo)).one()
        assert (photo.rel_path, photo.width, photo.height, photo.status, photo.faces) == ("07/a.jpg", 4000, 3000, "ok", 1)
        assert s.get(Person, "person_b").name == "Béla Bartók"
        f = s.get(FaceInstance, "abcdabcdabcdabcd_face0")
        assert f.landmarks == [[10.0, 20.0]] * 5 and f.embedded is True and f.payload_dirty is True
        assert (f.x1, f.y2, f.det_score, f.person_id, f.assignment_source) == (1.5, 152.0, 0.87, "person_a", "manual")
        ev = s.scalars(select(FaceAssignmentEvent)).one()
        assert ev.id >= 1 and ev.details == {"score": 0.72, "via": ["cli"]}
        assert abs(ev.created_at.replace(tzinfo=ev.created_at.tzinfo or timezone.utc) - datetime.now(timezone.utc)).total_seconds() < 120
        head = s.get(ProjectionHead, 1)
        assert head.promoted is True and head.live is False and head.metrics == {"recall@1": 0.93}
        assert s.get(PipelineState, "next_cluster").value == "2"
        assert s.get(FaceRejection, ("abcdabcdabcdabcd_face0", "person_b")) is not None

    # constraints are real on both backends
    with pytest.raises(IntegrityError):
        with session_scope(db_url) as s:
            s.add(Photo(batch="2024-summer", path="/x", rel_path="07/a.jpg", status="ok"))  # same (batch, rel_path)
    with pytest.raises(IntegrityError):
        with session_scope(db_url) as s:
            s.add(Photo(batch="no-such-batch", path="/x", rel_path="x.jpg", status="ok"))  # foreign key

    # ON DELETE SET NULL / CASCADE behave the same on both backends
    with session_scope(db_url) as s:
        s.execute(delete(Person).where(Person.person_id == "person_a"))
    with session_scope(db_url) as s:
        assert s.get(FaceInstance, "abcdabcdabcdabcd_face0").person_id is None
        s.execute(delete(PhotoBatch).where(PhotoBatch.name == "2024-summer"))
    with session_scope(db_url) as s:
        assert s.scalars(select(Photo)).all() == [] and s.scalars(select(FaceInstance)).all() == []
        assert s.scalars(select(FaceRejection)).all() == []
        # suggestions outlive their faces (history), their face rows and pair constraints do not
        assert s.scalars(select(SuggestionFace)).all() == [] and s.scalars(select(FacePairConstraint)).all() == []
        assert s.scalars(select(SuggestionRecord)).one().status == "open"
