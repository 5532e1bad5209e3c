"""Read-only views the page and the API need beyond the label module's own: paging, cover faces, strips of faces
per cluster, newest-first events, the library-health panel. Nothing here writes; every change goes through
:mod:`face_pipeline.core.labels` (the CLI's code path)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import case, func, select

from face_pipeline.core import face_state, labels
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import (
    HUMAN_SOURCES,
    PERSON_ACTIVE,
    PERSON_HIDDEN,
    SOURCE_AUTO,
    FaceAssignmentEvent,
    FaceInstance,
    Person,
    Photo,
    ProjectionHead,
)
from face_pipeline.core.face_state import NOISE_PREFIX, UNKNOWN_CLUSTER_PREFIX
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


# Best face first (human label, quality, detector score, id): the order of _best_first, for the database.
_BEST_ORDER = (case((FaceInstance.assignment_source.in_(HUMAN_SOURCES), 0), else_=1),
               func.coalesce(FaceInstance.quality_score, -1.0).desc(), func.coalesce(FaceInstance.det_score, 0.0).desc(),
               FaceInstance.face_id)


def _best_rank(partition):
    """ROW_NUMBER over ``partition`` in _BEST_ORDER, so a page never loads every face of every cluster."""
    return func.row_number().over(partition_by=partition, order_by=_BEST_ORDER)


def _top_faces(s, column, values: list[str], n: int) -> dict[str, list[str]]:
    """The ``n`` best face ids per value of ``column`` (a person or a cluster), in one query per chunk."""
    out: dict[str, list[str]] = defaultdict(list)
    for i in range(0, len(values), CHUNK):
        ranked = (select(column.label("key"), FaceInstance.face_id, _best_rank(column).label("rank"))
                  .where(column.in_(values[i : i + CHUNK])).subquery())
        for key, face_id in s.execute(select(ranked.c.key, ranked.c.face_id).where(ranked.c.rank <= n)
                                      .order_by(ranked.c.key, ranked.c.rank)):
            out[key].append(face_id)
    return out


def _covers(s, person_ids: list[str]) -> dict[str, str]:
    """Each person's best face (cover), one indexed look-up per person: cheaper than ranking all their faces."""
    best = (select(FaceInstance.face_id).where(FaceInstance.person_id == Person.person_id)
            .order_by(*_BEST_ORDER).limit(1).correlate(Person).scalar_subquery())
    out: dict[str, str] = {}
    for i in range(0, len(person_ids), CHUNK):
        out.update({pid: fid for pid, fid in s.execute(select(Person.person_id, best).where(Person.person_id.in_(person_ids[i : i + CHUNK]))) if fid})
    return out


def people(settings: Settings, limit: int = 100, offset: int = 0, include_hidden: bool = False,
           with_sources: bool = True) -> dict[str, Any]:
    """A page of people sorted as ``labels.list_persons`` (name case-insensitively, then id) with their face counts
    (by source when asked) and a cover face each; aggregated in SQL for the page only, because the people page
    must stay fast on a large library."""
    statuses = (PERSON_ACTIVE, PERSON_HIDDEN) if include_hidden else (PERSON_ACTIVE,)
    with session_scope(settings.sql_url) as s:
        persons = s.execute(select(Person.person_id, Person.name, Person.status).where(Person.status.in_(statuses))).all()
        persons = sorted(persons, key=lambda p: (p.name.casefold(), p.name, p.person_id))
        page = persons[offset : offset + limit]
        ids = [p.person_id for p in page]
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        by = (FaceInstance.person_id, FaceInstance.assignment_source) if with_sources else (FaceInstance.person_id,)
        for i in range(0, len(ids), CHUNK):
            for row in s.execute(select(*by, func.count()).where(FaceInstance.person_id.in_(ids[i : i + CHUNK])).group_by(*by)):
                counts[row[0]][(row[1] or "unknown") if with_sources else "all"] = row[-1]
        covers = _covers(s, ids)
    return {
        "total": len(persons), "limit": limit, "offset": offset,
        "items": [{"person_id": p.person_id, "name": p.name, "status": p.status, "faces": sum(counts[p.person_id].values()),
                   "faces_by_source": dict(sorted(counts[p.person_id].items())) if with_sources else None,
                   "cover_face_id": covers.get(p.person_id)} for p in page],
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
    """Unknown clusters (``unknown_cluster_*``, as ``labels.list_clusters``) largest first — one-face noise only
    when ``min_size`` is 1, smaller groups dropped — each with a strip of its best faces; with ``include_labeled`` the
    named people follow as clusters too (their cluster id is their person id). Counted in SQL."""
    with session_scope(settings.sql_url) as s:
        kinds = FaceInstance.cluster_id.startswith(UNKNOWN_CLUSTER_PREFIX, autoescape=True)
        if min_size <= 1:  # asked for everything: one-face noise too (each noise face is its own group)
            kinds = kinds | FaceInstance.cluster_id.startswith(NOISE_PREFIX, autoescape=True)
        sizes = s.execute(select(FaceInstance.cluster_id, func.count().label("n")).where(kinds)
                          .group_by(FaceInstance.cluster_id).having(func.count() >= min_size)).all()
        items: list[dict[str, Any]] = [
            {"cluster_id": cid, "faces": n, "person_id": None, "name": None, "labeled": False}
            for cid, n in sorted(sizes, key=lambda r: (-r.n, r.cluster_id))
        ]
        if include_labeled:
            named = s.execute(select(Person.person_id, Person.name, func.count(FaceInstance.face_id).label("n"))
                              .join(FaceInstance, FaceInstance.person_id == Person.person_id)
                              .where(Person.status == PERSON_ACTIVE).group_by(Person.person_id, Person.name)
                              .having(func.count(FaceInstance.face_id) >= min_size)).all()
            items += [{"cluster_id": pid, "faces": n, "person_id": pid, "name": name, "labeled": True}
                      for pid, name, n in sorted(named, key=lambda r: (-r.n, r.person_id))]
        page = items[offset : offset + limit]
        unknown_ids = [c["cluster_id"] for c in page if not c["labeled"]]
        strips = _top_faces(s, FaceInstance.cluster_id, unknown_ids, strip) if strip else {}
        strips.update(_top_faces(s, FaceInstance.person_id, [c["cluster_id"] for c in page if c["labeled"]], strip) if strip else {})
        # a partly labelled cluster: the person most of its labelled faces have
        majority: dict[str, tuple[int, str]] = {}
        for i in range(0, len(unknown_ids), CHUNK):
            for cid, pid, n in s.execute(select(FaceInstance.cluster_id, FaceInstance.person_id, func.count())
                                         .where(FaceInstance.cluster_id.in_(unknown_ids[i : i + CHUNK]), FaceInstance.person_id.is_not(None))
                                         .group_by(FaceInstance.cluster_id, FaceInstance.person_id)):
                if cid not in majority or (n, pid) > majority[cid]:
                    majority[cid] = (n, pid)
        names = {}
        if majority:
            names = dict(s.execute(select(Person.person_id, Person.name).where(Person.person_id.in_({p for _, p in majority.values()}))).all())
    for c in page:
        c["face_ids"] = strips.get(c["cluster_id"], [])
        if not c["labeled"] and c["cluster_id"] in majority:
            c["person_id"] = majority[c["cluster_id"]][1]
            c["name"] = names.get(c["person_id"])
    return {"total": len(items), "limit": limit, "offset": offset, "items": page}


def person_names(settings: Settings) -> list[dict[str, str]]:
    """Active people for autocomplete (hidden ones are not label targets until unhidden)."""
    with session_scope(settings.sql_url) as s:
        rows = s.execute(select(Person.person_id, Person.name).where(Person.status == PERSON_ACTIVE).order_by(Person.name)).all()
    return [{"person_id": pid, "name": name} for pid, name in rows]


def events(settings: Settings, limit: int = 50, offset: int = 0, since_id: int | None = None) -> dict[str, Any]:
    """Newest first (``since_id``: only newer ones), with whether the page can undo each."""
    from face_pipeline.web.undo import undo_plan

    with session_scope(settings.sql_url) as s:
        q = select(FaceAssignmentEvent)
        if since_id is not None:
            q = q.where(FaceAssignmentEvent.id > since_id)
        total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
        rows = list(s.scalars(q.order_by(FaceAssignmentEvent.id.desc()).limit(limit).offset(offset)))
        pids = sorted({p for e in rows for p in (e.from_person, e.to_person, (e.details or {}).get("rejected_person")) if isinstance(p, str)})
        fids = sorted({e.face_id for e in rows if e.face_id})
        # load the rows undo_plan looks at in two queries: its session.get calls then hit the identity map
        # (kept referenced: the identity map holds objects weakly)
        people_rows = list(s.scalars(select(Person).where(Person.person_id.in_(pids)))) if pids else []
        face_rows = []
        for i in range(0, len(fids), CHUNK):
            face_rows += s.scalars(select(FaceInstance).where(FaceInstance.face_id.in_(fids[i : i + CHUNK])))
        names = {p.person_id: p.name for p in people_rows}
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
    """The design's dashboard: faces, named / suggested / unknown / noise counts, the latest training and its verdict.
    One pass over the faces (grouped by source and kind of cluster) instead of a query per number."""
    kind = case((face_state.in_unknown_cluster(), "cluster"), (face_state.in_noise(), "noise"),
                else_="other")
    with session_scope(settings.sql_url) as s:
        rows = s.execute(select(FaceInstance.assignment_source, kind, func.count(),
                                func.sum(case((FaceInstance.embedded.is_(True), 1), else_=0))).group_by(FaceInstance.assignment_source, kind)).all()
        photos = s.scalar(select(func.count()).select_from(Photo)) or 0
        persons = dict(s.execute(select(Person.status, func.count()).group_by(Person.status)).all())
        clusters = s.scalar(select(func.count()).select_from(
            select(FaceInstance.cluster_id).where(face_state.in_unknown_cluster()).distinct().subquery())) or 0
        head = s.scalars(select(ProjectionHead).order_by(ProjectionHead.version.desc()).limit(1)).first()
    count = lambda pred: sum(n for src, k, n, _ in rows if pred(src, k))
    out = {
        "photos": photos, "faces": count(lambda *_: True), "faces_embedded": sum(e or 0 for *_, e in rows),
        "named_by_people": count(lambda src, k: src in HUMAN_SOURCES), "named_automatically": count(lambda src, k: src == SOURCE_AUTO),
        "unknown_in_clusters": count(lambda src, k: src is None and k == "cluster"), "unknown_clusters": clusters,
        "noise": count(lambda src, k: src is None and k == "noise"), "unassigned": count(lambda src, k: src is None),
        "persons": persons, "suggested": None, "training": None,
    }
    if head is not None:
        metrics = head.metrics or {}
        out["training"] = {"version": head.version, "created_at": head.created_at, "promoted": head.promoted, "live": head.live,
                           "verdict": "promoted and live" if head.promoted and head.live else "promoted" if head.promoted else "not promoted",
                           "reasons": list(metrics.get("reasons", []))[:5]}
    from face_pipeline.web import suggestions_api

    out["suggested"] = suggestions_api.open_count(settings)
    return out
