"""Read views over people, clusters and the event log (no writes)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from sqlalchemy import select

from face_pipeline.core import face_state
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import PERSON_ACTIVE, PERSON_HIDDEN, FaceAssignmentEvent, FaceInstance, Person
from face_pipeline.core.labels.refs import faces_of, photo_paths, resolve_person
from face_pipeline.core.labels.results import ClusterInfo, EventInfo, PersonInfo, PersonSummary
from face_pipeline.settings import Settings

CLUSTER_SAMPLES = 6


def _by_source(faces: Iterable[FaceInstance]) -> dict[str, int]:
    return dict(sorted(Counter(f.assignment_source or "unknown" for f in faces).items()))


def get_person(settings: Settings, ref: str) -> PersonInfo:
    """Everything about one person: status (a merged person says where it went), faces by source, photos."""
    with session_scope(settings.sql_url) as s:
        p = resolve_person(s, ref)
        faces = faces_of(s, [p.person_id])
        image_ids = sorted({f.image_id for f in faces})
        paths = photo_paths(s, image_ids)
        return PersonInfo(
            person_id=p.person_id, name=p.name, status=p.status, merged_into=p.merged_into, faces=len(faces),
            faces_by_source=_by_source(faces), face_ids=[f.face_id for f in faces], image_ids=image_ids,
            photos=[paths[i] for i in image_ids if i in paths], created_at=p.created_at, updated_at=p.updated_at,
        )


def list_persons(settings: Settings, include_hidden: bool = False) -> list[PersonSummary]:
    """Active persons (plus hidden ones if asked), sorted by name (case-insensitively, then id). Merged persons
    are never listed: their faces are their target's."""
    statuses = (PERSON_ACTIVE, PERSON_HIDDEN) if include_hidden else (PERSON_ACTIVE,)
    with session_scope(settings.sql_url) as s:
        persons = list(s.scalars(select(Person).where(Person.status.in_(statuses))))
        counts: dict[str, Counter] = defaultdict(Counter)
        rows = s.execute(select(FaceInstance.person_id, FaceInstance.assignment_source).where(FaceInstance.person_id.in_([p.person_id for p in persons])))
        for pid, src in rows:
            counts[pid][src or "unknown"] += 1
    out = [PersonSummary(p.person_id, p.name, p.status, sum(counts[p.person_id].values()), dict(sorted(counts[p.person_id].items())))
           for p in persons]
    return sorted(out, key=lambda x: (x.name.casefold(), x.name, x.person_id))


def list_clusters(settings: Settings) -> list[ClusterInfo]:
    """Unknown clusters (``unknown_cluster_*``; noise singletons excluded), largest first."""
    with session_scope(settings.sql_url) as s:
        rows = s.execute(
            select(FaceInstance.cluster_id, FaceInstance.face_id, FaceInstance.person_id, FaceInstance.quality_score, FaceInstance.det_score)
            .where(FaceInstance.cluster_id.startswith(face_state.UNKNOWN_CLUSTER_PREFIX, autoescape=True))
        ).all()
    groups: dict[str, list] = defaultdict(list)
    for row in rows:
        groups[row.cluster_id].append(row)
    out = []
    for cid, members in groups.items():
        best = sorted(members, key=lambda r: (-(r.quality_score if r.quality_score is not None else -1.0), -(r.det_score or 0.0), r.face_id))
        persons = Counter(r.person_id for r in members if r.person_id)
        out.append(ClusterInfo(cid, len(members), [r.face_id for r in best[:CLUSTER_SAMPLES]],
                               persons.most_common(1)[0][0] if persons else None))
    return sorted(out, key=lambda c: (-c.faces, c.cluster_id))


def recent_events(settings: Settings, since_id: int = 0, limit: int = 100) -> list[EventInfo]:
    """Events after ``since_id`` (oldest first), so a caller can page forward with the last id it saw."""
    with session_scope(settings.sql_url) as s:
        rows = s.scalars(select(FaceAssignmentEvent).where(FaceAssignmentEvent.id > since_id).order_by(FaceAssignmentEvent.id).limit(max(0, limit)))
        return [EventInfo(e.id, e.created_at, e.actor, e.action, e.face_id, e.from_person, e.to_person, e.cluster_id, e.reason, e.details)
                for e in rows]
