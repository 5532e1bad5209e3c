"""Read-only views the page and the API need beyond the label module's own: paging, cover faces, strips of faces
per cluster, newest-first events, the library-health panel. Nothing here writes; every change goes through
:mod:`face_pipeline.core.labels` (the CLI's code path)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import func, select

from face_pipeline.core import labels, report
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import (
    HUMAN_SOURCES,
    PERSON_ACTIVE,
    PERSON_HIDDEN,
    FaceAssignmentEvent,
    FaceInstance,
    Person,
    ProjectionHead,
)
from face_pipeline.core.errors import Conflict
from face_pipeline.core.face_state import is_person_id
from face_pipeline.settings import Settings

CHUNK = 500


def _best_first(rows) -> list:
    """Best faces first: a human-labelled one, then quality, then detector score (as labels' cluster samples)."""
    return sorted(rows, key=lambda r: (r.assignment_source not in HUMAN_SOURCES,
                                       -(r.quality_score if r.quality_score is not None else -1.0), -(r.det_score or 0.0), r.face_id))


def _faces_where(s, column, values: list[str]):
    cols = (FaceInstance.face_id, FaceInstance.image_id, FaceInstance.person_id, FaceInstance.cluster_id,
            FaceInstance.assignment_source, FaceInstance.quality_score, FaceInstance.det_score, FaceInstance.person_confidence,
            FaceInstance.x1, FaceInstance.y1, FaceInstance.x2, FaceInstance.y2)
    for i in range(0, len(values), CHUNK):
        yield from s.execute(select(*cols).where(column.in_(values[i : i + CHUNK])))


def face_dict(r) -> dict[str, Any]:
    return {"face_id": r.face_id, "image_id": r.image_id, "person_id": r.person_id, "cluster_id": r.cluster_id,
            "source": r.assignment_source, "confidence": r.person_confidence, "quality": r.quality_score,
            "bbox": [round(r.x1, 1), round(r.y1, 1), round(r.x2, 1), round(r.y2, 1)]}


def people(settings: Settings, limit: int = 100, offset: int = 0, include_hidden: bool = False) -> dict[str, Any]:
    """A page of people (sorted as ``labels.list_persons``) with their counts and a cover face each."""
    everyone = labels.list_persons(settings, include_hidden=include_hidden)
    page = everyone[offset : offset + limit]
    covers: dict[str, str] = {}
    if page:
        with session_scope(settings.sql_url) as s:
            by_person = defaultdict(list)
            for r in _faces_where(s, FaceInstance.person_id, [p.person_id for p in page]):
                by_person[r.person_id].append(r)
        covers = {pid: _best_first(rows)[0].face_id for pid, rows in by_person.items()}
    return {
        "total": len(everyone), "limit": limit, "offset": offset,
        "items": [{"person_id": p.person_id, "name": p.name, "status": p.status, "faces": p.faces,
                   "faces_by_source": p.faces_by_source, "cover_face_id": covers.get(p.person_id)} for p in page],
    }


def person(settings: Settings, ref: str, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    info = labels.get_person(settings, ref)
    with session_scope(settings.sql_url) as s:
        rows = _best_first(list(_faces_where(s, FaceInstance.person_id, [info.person_id])))
    page = rows[offset : offset + limit]
    return {
        "person_id": info.person_id, "name": info.name, "status": info.status, "merged_into": info.merged_into,
        "faces": info.faces, "faces_by_source": info.faces_by_source,
        "cover_face_id": rows[0].face_id if rows else None, "photos": len(info.image_ids),
        "created_at": info.created_at, "updated_at": info.updated_at,
        "limit": limit, "offset": offset, "items": [face_dict(r) for r in page],
    }


def clusters(settings: Settings, include_labeled: bool = False, min_size: int = 2, limit: int = 50, offset: int = 0,
             strip: int = 20) -> dict[str, Any]:
    """Unknown clusters largest first (noise singletons never: ``labels.list_clusters`` leaves them out, and
    ``min_size`` drops small ones), each with a strip of its best faces; with ``include_labeled`` the named people
    follow as clusters too (their cluster id is their person id)."""
    items: list[dict[str, Any]] = [
        {"cluster_id": c.cluster_id, "faces": c.faces, "person_id": c.person_id, "name": None, "labeled": False}
        for c in labels.list_clusters(settings) if c.faces >= min_size
    ]
    if include_labeled:
        items += [{"cluster_id": p.person_id, "faces": p.faces, "person_id": p.person_id, "name": p.name, "labeled": True}
                  for p in sorted(labels.list_persons(settings), key=lambda p: (-p.faces, p.person_id)) if p.faces >= min_size]
    page = items[offset : offset + limit]
    unknown_ids = [c["cluster_id"] for c in page if not c["labeled"]]
    person_ids = [c["cluster_id"] for c in page if c["labeled"]]
    strips: dict[str, list] = defaultdict(list)
    names: dict[str, str] = {}
    with session_scope(settings.sql_url) as s:
        for r in _faces_where(s, FaceInstance.cluster_id, unknown_ids):
            strips[r.cluster_id].append(r)
        for r in _faces_where(s, FaceInstance.person_id, person_ids):
            strips[r.person_id].append(r)
        partly = sorted({c["person_id"] for c in page if c["person_id"] and not c["labeled"]})
        if partly:
            names = dict(s.execute(select(Person.person_id, Person.name).where(Person.person_id.in_(partly))).all())
    for c in page:
        c["face_ids"] = [r.face_id for r in _best_first(strips.get(c["cluster_id"], []))[:strip]]
        if not c["labeled"] and c["person_id"]:
            c["name"] = names.get(c["person_id"])
    return {"total": len(items), "limit": limit, "offset": offset, "items": page}


def person_names(settings: Settings) -> list[dict[str, str]]:
    """Active people for autocomplete (hidden ones are not label targets until unhidden)."""
    with session_scope(settings.sql_url) as s:
        rows = s.execute(select(Person.person_id, Person.name).where(Person.status == PERSON_ACTIVE).order_by(Person.name)).all()
    return [{"person_id": pid, "name": name} for pid, name in rows]


def check_cluster_name(settings: Settings, cluster_id: str, name: str, merge: bool) -> None:
    """Naming a cluster with a name somebody already has must ask, not silently merge: raise Conflict unless the
    caller said ``merge`` (or passed the person id, or the cluster is already partly that person's)."""
    if merge or is_person_id((name or "").strip()):
        return
    clean = " ".join((name or "").split())
    if not clean:
        return  # the label operation says what is wrong with an empty name
    with session_scope(settings.sql_url) as s:
        holders = list(s.execute(select(Person.person_id, Person.status).where(
            Person.name == clean, Person.status.in_((PERSON_ACTIVE, PERSON_HIDDEN)))).all())
        if not holders:
            return
        already = set(s.scalars(select(FaceInstance.person_id).where(FaceInstance.cluster_id == cluster_id,
                                                                     FaceInstance.person_id.is_not(None)).distinct()))
    if any(pid in already for pid, _ in holders):
        return
    ids = ", ".join(f"{pid} ({status})" for pid, status in holders)
    raise Conflict(f"a person named {clean!r} already exists ({ids}); to add this cluster's faces to them, label again "
                   "with merge=true (CLI: --merge), or choose another name")


def events(settings: Settings, limit: int = 50, offset: int = 0, since_id: int | None = None) -> dict[str, Any]:
    """Newest first (``since_id``: only newer ones), with whether the page can undo each."""
    from face_pipeline.web.undo import undo_plan

    with session_scope(settings.sql_url) as s:
        q = select(FaceAssignmentEvent)
        if since_id is not None:
            q = q.where(FaceAssignmentEvent.id > since_id)
        total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
        rows = list(s.scalars(q.order_by(FaceAssignmentEvent.id.desc()).limit(limit).offset(offset)))
        pids = sorted({p for e in rows for p in (e.from_person, e.to_person) if p})
        names = dict(s.execute(select(Person.person_id, Person.name).where(Person.person_id.in_(pids))).all()) if pids else {}
        items = []
        for e in rows:
            items.append({
                "id": e.id, "created_at": e.created_at, "actor": e.actor, "action": e.action, "face_id": e.face_id,
                "from_person": e.from_person, "to_person": e.to_person, "cluster_id": e.cluster_id, "reason": e.reason,
                "details": e.details, "from_name": names.get(e.from_person), "to_name": names.get(e.to_person),
                "can_undo": undo_plan(s, e) is not None,
            })
    return {"total": total, "limit": limit, "offset": offset, "items": items}


def health(settings: Settings) -> dict[str, Any]:
    """The design's dashboard: faces, named / suggested / unknown / noise counts, the latest training and its verdict."""
    stats = report.library_stats(settings)
    by_source = stats["faces_by_source"]
    with session_scope(settings.sql_url) as s:
        head = s.scalars(select(ProjectionHead).order_by(ProjectionHead.version.desc()).limit(1)).first()
        in_clusters = s.scalar(select(func.count()).where(FaceInstance.person_id.is_(None),
                                                          FaceInstance.cluster_id.like("unknown_cluster_%"))) or 0
    named = sum(v for k, v in by_source.items() if k in HUMAN_SOURCES)
    out = {
        "photos": stats["photos"], "faces": stats["faces"], "faces_embedded": stats["faces_embedded"],
        "named_by_people": named, "named_automatically": by_source.get("auto", 0),
        "unknown_in_clusters": in_clusters, "unknown_clusters": stats["unknown_clusters"], "noise": stats["noise_faces"],
        "unassigned": by_source.get("unassigned", 0), "persons": stats["persons"], "suggested": None,
        "training": None,
    }
    if head is not None:
        metrics = head.metrics or {}
        out["training"] = {"version": head.version, "created_at": head.created_at, "promoted": head.promoted, "live": head.live,
                           "verdict": "promoted and live" if head.promoted and head.live else "promoted" if head.promoted else "not promoted",
                           "reasons": list(metrics.get("reasons", []))[:5]}
    from face_pipeline.web import suggestions_api

    out["suggested"] = suggestions_api.open_count(settings)
    return out
