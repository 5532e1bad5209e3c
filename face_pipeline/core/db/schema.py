"""The SQL schema: the source of truth for photos, faces, people, labels and the audit log.

Designed once for the whole product (ingest, clustering, labelling, training). Vectors live in Qdrant; every
fact a person cares about (who is who, what they changed, when) lives here, so losing the vector store loses
nothing that cannot be recomputed.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


# Status / source vocabularies (plain strings in SQL so PostgreSQL and SQLite agree without enum types).
PHOTO_OK, PHOTO_NO_FACES, PHOTO_FAILED, PHOTO_DUPLICATE = "ok", "no_faces", "failed", "duplicate"
SOURCE_MANUAL, SOURCE_AUTO, SOURCE_CLUSTER = "manual", "auto", "cluster"
HUMAN_SOURCES = (SOURCE_MANUAL, SOURCE_CLUSTER)  # set by a person: automation never overwrites these
PERSON_ACTIVE, PERSON_MERGED, PERSON_HIDDEN = "active", "merged", "hidden"
PIPELINE_ACTOR = "pipeline"  # events written by automation; the label-change sensor ignores them


class PhotoBatch(Base):
    """One dynamic partition: a folder of photos ingested together."""

    __tablename__ = "photo_batches"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    source_dir: Mapped[str] = mapped_column(Text)
    # --- batch identity (migration 0003): SHA-256 of the resolved folder; a batch IS its folder
    folder_key: Mapped[str | None] = mapped_column(String(64), unique=True, index=True, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="registered")  # registered / detected / embedded
    photos: Mapped[int] = mapped_column(Integer, default=0)
    faces: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    detected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    embedded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Photo(Base):
    """One file seen in a batch. ``image_id`` derives from the content hash, so the same picture copied into
    two batches shares an image id and its faces are detected and embedded once (the later copy is recorded
    with status ``duplicate``)."""

    __tablename__ = "photos"
    __table_args__ = (UniqueConstraint("batch", "rel_path", name="uq_photos_batch_path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch: Mapped[str] = mapped_column(ForeignKey("photo_batches.name", ondelete="CASCADE"), index=True)
    path: Mapped[str] = mapped_column(Text)
    rel_path: Mapped[str] = mapped_column(String(1000))
    image_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    faces: Mapped[int] = mapped_column(Integer, default=0)
    ingested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Person(Base):
    __tablename__ = "persons"
    person_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # person_{uuid hex}
    name: Mapped[str] = mapped_column(String(300), index=True)
    status: Mapped[str] = mapped_column(String(20), default=PERSON_ACTIVE)
    merged_into: Mapped[str | None] = mapped_column(ForeignKey("persons.person_id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class FaceInstance(Base):
    """One detected face. ``face_id`` is ``{image_id}_face{n}`` with n counted left to right, so re-running a
    batch produces the same ids and overwrites instead of duplicating."""

    __tablename__ = "face_instances"
    __table_args__ = (Index("ix_faces_person", "person_id"), Index("ix_faces_cluster", "cluster_id"))
    face_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    image_id: Mapped[str] = mapped_column(String(64), index=True)
    batch: Mapped[str] = mapped_column(ForeignKey("photo_batches.name", ondelete="CASCADE"), index=True)
    face_index: Mapped[int] = mapped_column(Integer)
    x1: Mapped[float] = mapped_column(Float)
    y1: Mapped[float] = mapped_column(Float)
    x2: Mapped[float] = mapped_column(Float)
    y2: Mapped[float] = mapped_column(Float)
    landmarks: Mapped[list] = mapped_column(JSON)  # 5 × [x, y]
    det_score: Mapped[float] = mapped_column(Float)
    quality_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    embedding_norm: Mapped[float | None] = mapped_column(Float, nullable=True)
    embedding_model: Mapped[str | None] = mapped_column(String(100), nullable=True)
    embedded: Mapped[bool] = mapped_column(Boolean, default=False)
    person_id: Mapped[str | None] = mapped_column(ForeignKey("persons.person_id", ondelete="SET NULL"), nullable=True)
    cluster_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    person_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    person_margin: Mapped[float | None] = mapped_column(Float, nullable=True)
    assignment_source: Mapped[str | None] = mapped_column(String(20), nullable=True)
    payload_dirty: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class FaceRejection(Base):
    """"Not this person": a cannot-link between a face and a person, respected by every later assignment."""

    __tablename__ = "face_rejections"
    face_id: Mapped[str] = mapped_column(ForeignKey("face_instances.face_id", ondelete="CASCADE"), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.person_id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FaceAssignmentEvent(Base):
    """Append-only audit log: every change of who a face is, by whom and why. Its id is the sensors' cursor."""

    __tablename__ = "face_assignment_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(50), index=True)
    face_id: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    from_person: Mapped[str | None] = mapped_column(String(64), nullable=True)
    to_person: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cluster_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class ProjectionHead(Base):
    """A trained projection head version and whether the gate promoted it."""

    __tablename__ = "projection_heads"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    embedding_model: Mapped[str] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(Text)
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)
    live: Mapped[bool] = mapped_column(Boolean, default=False)
    metrics: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    last_event_id: Mapped[int] = mapped_column(Integer, default=0)  # label state it was trained on
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PipelineState(Base):
    """Small key/value facts the pipeline keeps between runs (next cluster number, last clustered event)."""

    __tablename__ = "pipeline_state"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# ---- suggestions (owner: face_pipeline.core.suggestions; migration 0002) --------------------------------------
SUGGESTION_OPEN, SUGGESTION_ACCEPTED, SUGGESTION_REJECTED, SUGGESTION_STALE = "open", "accepted", "rejected", "stale"
SUGGESTION_STATUSES = (SUGGESTION_OPEN, SUGGESTION_ACCEPTED, SUGGESTION_REJECTED, SUGGESTION_STALE)


class SuggestionRecord(Base):
    """A question for a person ("is this X?", "the same person?"), stored so it can be listed, answered once and
    remembered: answered rows are history (a rejected one is never proposed again); ``stale`` ones were replaced
    by a later organise run or lost their subject (a person deleted, every face labelled).

    Person ids carry no foreign key on purpose, like the events: a deleted person must not erase the history, and
    an open suggestion about a person who is gone simply reads as stale. ``fingerprint`` identifies the question
    (kind, persons, face sets) so an unchanged suggestion keeps its id across organise runs."""

    __tablename__ = "suggestions"
    __table_args__ = (Index("ix_suggestions_status_priority", "status", "priority"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(30), index=True)
    status: Mapped[str] = mapped_column(String(20), default=SUGGESTION_OPEN)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(100), default=PIPELINE_ACTOR)  # who asked: automation
    person_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    other_person_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    cluster_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    other_cluster_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    faces: Mapped[int] = mapped_column(Integer, default=0)  # faces on side 0 when stored
    other_faces: Mapped[int] = mapped_column(Integer, default=0)  # faces on side 1 when stored
    score: Mapped[float] = mapped_column(Float, default=0.0)
    bar: Mapped[float] = mapped_column(Float, default=0.0)
    priority: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)  # last confirmed by organise
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # or made stale
    actor: Mapped[str | None] = mapped_column(String(100), nullable=True)
    answer: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # what the answer did (name given, counts)
    #: The candidate's face the evidence points at, shown beside the question (display only; gone with its photo).
    evidence_face_id: Mapped[str | None] = mapped_column(ForeignKey("face_instances.face_id", ondelete="SET NULL", name="fk_suggestions_evidence_face_id"),
                                                         nullable=True, index=True)  # indexed: a face deleted finds its questions


class SuggestionFace(Base):
    """The faces a suggestion is about, one row each (``side`` 0 = ``face_ids``, 1 = ``other_face_ids``): a child
    table rather than a JSON list so "which suggestions touch this face" is an indexed query on both SQLite and
    PostgreSQL, and a face deleted with its photo leaves every suggestion by cascade."""

    __tablename__ = "suggestion_faces"
    suggestion_id: Mapped[int] = mapped_column(ForeignKey("suggestions.id", ondelete="CASCADE"), primary_key=True)
    face_id: Mapped[str] = mapped_column(ForeignKey("face_instances.face_id", ondelete="CASCADE"), primary_key=True, index=True)
    side: Mapped[int] = mapped_column(Integer, default=0)


class FacePairConstraint(Base):
    """A person's answer about two faces: the same person (must-link) or not (cannot-link). One row per unordered
    pair (``face_id_a < face_id_b``): the latest answer is the fact. Clustering honours both kinds."""

    __tablename__ = "face_pair_constraints"
    face_id_a: Mapped[str] = mapped_column(ForeignKey("face_instances.face_id", ondelete="CASCADE"), primary_key=True)
    face_id_b: Mapped[str] = mapped_column(ForeignKey("face_instances.face_id", ondelete="CASCADE"), primary_key=True, index=True)
    same: Mapped[bool] = mapped_column(Boolean)
    actor: Mapped[str] = mapped_column(String(100))
    suggestion_id: Mapped[int | None] = mapped_column(ForeignKey("suggestions.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
