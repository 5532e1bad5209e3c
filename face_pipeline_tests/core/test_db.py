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
