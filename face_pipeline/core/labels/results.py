"""What the label operations and views return: plain dataclasses every front end renders the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

@dataclass
class LabelResult:
    """What one operation did, face by face, so every front end can say it the same way.

    ``changed``: faces whose person or source changed as asked. ``unchanged``: already so. ``skipped``: left
    alone because a human label says otherwise. ``rejected``: left alone because the face was rejected for the
    person. ``conflicts``: not given the person because another face of the same photo has (or got) it.
    ``unassigned``: faces that lost their person as a consequence. ``synced``: faces pushed to Qdrant by the
    operation itself; label operations write SQL only, so ``None`` = pending until the next pipeline run.
    """

    action: str
    person_id: str | None = None
    name: str | None = None
    created: bool = False
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    unassigned: list[str] = field(default_factory=list)
    events: int = 0
    synced: int | None = None


@dataclass
class PersonSummary:
    person_id: str
    name: str
    status: str
    faces: int
    faces_by_source: dict[str, int]


@dataclass
class PersonInfo:
    person_id: str
    name: str
    status: str
    merged_into: str | None
    faces: int
    faces_by_source: dict[str, int]
    face_ids: list[str]
    image_ids: list[str]
    photos: list[str]  # file paths of those images (first copy seen), where known
    created_at: datetime | None
    updated_at: datetime | None


@dataclass
class ClusterInfo:
    cluster_id: str
    faces: int
    sample_face_ids: list[str]  # best faces first (quality, then detector score)
    person_id: str | None = None  # the person most of its faces already have, if any (partly labelled cluster)


@dataclass
class FaceMatch:
    bbox: tuple[float, float, float, float]
    person_id: str | None
    name: str | None
    confidence: float | None  # best admissible score, also for an unmatched face ("closest was …")
    margin: float | None


@dataclass
class SearchHit:
    query_face_index: int
    face_id: str
    score: float
    person_id: str | None
    name: str | None
    image_id: str | None


@dataclass
class EventInfo:
    id: int
    created_at: datetime
    actor: str
    action: str
    face_id: str | None
    from_person: str | None
    to_person: str | None
    cluster_id: str | None
    reason: str | None
    details: dict | None
