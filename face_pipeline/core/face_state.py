"""The one owner of a face's identity state: who it is, which group it sits in, how sure we are, who said so.

Every write of ``person_id`` / ``cluster_id`` / ``person_confidence`` / ``person_margin`` / ``assignment_source``
/ ``payload_dirty`` on a :class:`FaceInstance` goes through this module, whether a person labelled the face
(:mod:`labels`), automation named or clustered it (:mod:`organize`), or it was (re-)ingested. So the rules below
hold everywhere, and a reader finds them in one place:

* **An assigned face's cluster is its person.** ``cluster_id`` carries one of three kinds of value, spelled only
  here: a person id (``person_<hex>``), an unknown group (``unknown_cluster_<N>``), or a face nobody and nothing
  else resembles (``unknown_noise_<face_id>``). ``NULL`` means "not organised yet": clustering picks it up.
* **Humans outrank automation.** :func:`write_pipeline_decision` never touches a face whose source is human.
* **Any change that the Qdrant payload mirrors marks the face dirty**, so :mod:`sync` pushes it; the payload itself
  is built here from the SQL row (:func:`payload_of`), the only definition of its fields.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence

from sqlalchemy import and_, bindparam, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from face_pipeline.core.db.schema import (
    HUMAN_SOURCES,
    PIPELINE_ACTOR,
    SOURCE_AUTO,
    FaceAssignmentEvent,
    FaceInstance,
)

# ---------------------------------------------------------------------------------------------- vocabulary ----
PERSON_PREFIX = "person_"
PERSON_ID_RE = re.compile(r"person_[0-9a-f]{32}")
UNKNOWN_CLUSTER_PREFIX = "unknown_cluster_"
NOISE_PREFIX = "unknown_noise_"
_UNKNOWN_CLUSTER_RE = re.compile(r"^unknown_cluster_(\d+)$")

HUMAN_CONFIDENCE = 1.0  # a person said so: the payload's person_confidence reads as certain

# What the Qdrant payload holds, and the face columns it is built from (sync clears a dirty flag only when none of
# these changed since they were pushed).
PAYLOAD_FIELDS = ("face_id", "image_id", "bbox", "person_id", "person_confidence", "det_score", "quality_score",
                  "indexed_at", "batch")
PAYLOAD_COLUMNS = ("person_id", "person_confidence", "quality_score", "det_score", "x1", "y1", "x2", "y2", "image_id",
                   "batch")


def new_person_id() -> str:
    return f"{PERSON_PREFIX}{uuid.uuid4().hex}"


def is_person_id(value: str | None) -> bool:
    return bool(value) and PERSON_ID_RE.fullmatch(value) is not None


def unknown_cluster_id(number: int) -> str:
    return f"{UNKNOWN_CLUSTER_PREFIX}{int(number)}"


def unknown_cluster_number(cluster_id: str | None) -> int | None:
    """N of ``unknown_cluster_N``; ``None`` for any other kind of value."""
    m = _UNKNOWN_CLUSTER_RE.match(cluster_id or "")
    return int(m.group(1)) if m else None


def noise_id(face_id: str) -> str:
    return f"{NOISE_PREFIX}{face_id}"


def is_unknown_cluster(cluster_id: str | None) -> bool:
    return bool(cluster_id) and cluster_id.startswith(UNKNOWN_CLUSTER_PREFIX)


def is_noise(cluster_id: str | None) -> bool:
    return bool(cluster_id) and cluster_id.startswith(NOISE_PREFIX)


def in_unknown_cluster(column=FaceInstance.cluster_id):
    """SQL condition: the face sits in an unknown cluster (the query-side twin of :func:`is_unknown_cluster`)."""
    return column.startswith(UNKNOWN_CLUSTER_PREFIX, autoescape=True)


def in_noise(column=FaceInstance.cluster_id):
    """SQL condition: the face is noise (the query-side twin of :func:`is_noise`)."""
    return column.startswith(NOISE_PREFIX, autoescape=True)


def is_human(face: FaceInstance) -> bool:
    return face.assignment_source in HUMAN_SOURCES and face.person_id is not None


# ------------------------------------------------------------------------------------------------- writes ----
def _set_person(face: FaceInstance, person_id: str | None, source: str | None, confidence: float | None,
                margin: float | None) -> None:
    face.person_id = person_id
    face.cluster_id = person_id  # an assigned face's group is its person; NULL sends it back to clustering
    face.assignment_source = source
    face.person_confidence = confidence
    face.person_margin = margin
    face.payload_dirty = True


def assign(face: FaceInstance, person_id: str, source: str, confidence: float | None = HUMAN_CONFIDENCE,
           margin: float | None = None) -> None:
    """Give ``face`` to ``person_id``; the caller decides whether it may (human rules live in the callers' docs)."""
    _set_person(face, person_id, source, confidence, margin)


def unassign(face: FaceInstance) -> None:
    """Take the face's person away; ``cluster_id`` NULL sends it back to clustering."""
    _set_person(face, None, None, None, None)


def _person_columns(person_id: str | None, source: str | None, confidence: float | None, margin: float | None) -> dict:
    """The columns :func:`_set_person` writes, as a dict (the bulk path's form of the same rule)."""
    return {"person_id": person_id, "cluster_id": person_id, "assignment_source": source, "person_confidence": confidence,
            "person_margin": margin, "payload_dirty": True}


def _pipeline_decision(face_id: str, current: dict, person: str | None, confidence: float | None, margin: float | None,
                       reason: str | None) -> tuple[str, dict, dict | None]:
    """The rule behind :func:`write_pipeline_decision`, on plain values: (outcome, columns to set, event or None).

    ``current`` holds the face's ``person_id``, ``assignment_source`` and ``person_confidence``."""
    cur_person, cur_source = current["person_id"], current["assignment_source"]
    if cur_source in HUMAN_SOURCES and cur_person is not None:
        return "human", {}, None
    if person is None:
        if cur_source == SOURCE_AUTO and cur_person is not None:
            event = {"actor": PIPELINE_ACTOR, "action": "auto_unassign", "face_id": face_id, "from_person": cur_person,
                     "to_person": None, "reason": reason or "no longer clears the bar"}
            return "unassigned", _person_columns(None, None, None, None), event
        return "unchanged", {"person_confidence": None, "person_margin": None}, None
    conf = None if confidence is None else round(float(confidence), 5)
    marg = None if margin is None else round(float(margin), 5)
    if cur_person != person:
        event = {"actor": PIPELINE_ACTOR, "action": "auto_assign", "face_id": face_id, "from_person": cur_person,
                 "to_person": person, "reason": reason or (f"confidence {conf:.3f}" if conf is not None else None)}
        return ("moved" if cur_person is not None else "assigned"), _person_columns(person, SOURCE_AUTO, conf, marg), event
    cur_conf = current["person_confidence"]
    columns = {"cluster_id": person, "assignment_source": SOURCE_AUTO, "person_margin": marg}
    if cur_conf is None or conf is None or abs(cur_conf - conf) > 1e-4:
        return "refreshed", {**columns, "person_confidence": conf, "payload_dirty": True}, None
    return "unchanged", columns, None


def write_pipeline_decision(session: Session, face: FaceInstance, person: str | None, confidence: float | None,
                            margin: float | None, reason: str | None = None) -> str:
    """Apply automation's decision for one face, never over a human's: returns what happened —
    ``"human"`` (left alone), ``"assigned"`` (had no person), ``"moved"`` (had another), ``"unassigned"``
    (lost an automatic person), ``"refreshed"`` (same person, new confidence) or ``"unchanged"``.

    Events are written with the pipeline actor, so the label-change sensor never takes them for a person's."""
    current = {"person_id": face.person_id, "assignment_source": face.assignment_source, "person_confidence": face.person_confidence}
    outcome, columns, event = _pipeline_decision(face.face_id, current, person, confidence, margin, reason)
    if event is not None:
        session.add(FaceAssignmentEvent(**event))
    for name, value in columns.items():
        setattr(face, name, value)
    return outcome


_DECISION_COLUMNS = ("person_id", "assignment_source", "person_confidence", "person_margin", "cluster_id")


def write_pipeline_decisions(session: Session, decisions: dict[str, tuple[str | None, float | None, float | None]],
                             chunk: int = 900) -> Counter:
    """:func:`write_pipeline_decision` for many faces at once (``face_id → (person, confidence, margin)``): the
    library-wide organise decides about every face, and one ORM object and UPDATE per face cost more than the
    decisions. Reads only the columns the rule needs, skips rows whose values would not change, and writes the
    rest as executemany UPDATEs by primary key that also re-check, in SQL, that no human label arrived in the
    meantime. Returns the count of each outcome."""
    table = FaceInstance.__table__
    ids = list(decisions)
    outcomes: Counter = Counter()
    events: list[dict] = []
    writes: dict[tuple[str, ...], list[dict]] = defaultdict(list)
    for i in range(0, len(ids), chunk):
        part = ids[i : i + chunk]
        rows = session.execute(select(table.c.face_id, *(table.c[c] for c in _DECISION_COLUMNS)).where(table.c.face_id.in_(part)))
        for row in rows:
            current = dict(zip(_DECISION_COLUMNS, row[1:]))
            outcome, columns, event = _pipeline_decision(row[0], current, *decisions[row[0]], None)
            outcomes[outcome] += 1
            if event is not None:
                events.append(event)
            columns = {c: v for c, v in columns.items() if c not in current or current[c] != v}
            if columns:
                writes[tuple(sorted(columns))].append({"_face_id": row[0], **columns})
    # Spelled out (no IN list): an expanding parameter cannot go into an executemany.
    not_human = or_(table.c.person_id.is_(None), table.c.assignment_source.is_(None),
                    and_(*(table.c.assignment_source != literal(src) for src in sorted(HUMAN_SOURCES))))
    for names, params in writes.items():
        stmt = update(table).where(table.c.face_id == bindparam("_face_id"), not_human).values({c: bindparam(c) for c in names})
        session.execute(stmt, params)
    if events:
        # A person may have labelled one of these faces after the read: the UPDATE left it alone, so no automatic
        # event may claim otherwise (this transaction now holds the rows it wrote).
        labelled_meanwhile = set()
        ids_with_events = [e["face_id"] for e in events]
        for i in range(0, len(ids_with_events), chunk):
            labelled_meanwhile.update(session.scalars(select(table.c.face_id).where(
                table.c.face_id.in_(ids_with_events[i : i + chunk]), table.c.person_id.is_not(None),
                table.c.assignment_source.in_(sorted(HUMAN_SOURCES)))))
        events = [e for e in events if e["face_id"] not in labelled_meanwhile]
        if events:
            session.execute(insert(FaceAssignmentEvent), events)
    return outcomes


def set_unknown_groups(session: Session, wanted: dict[str, str], chunk: int = 900) -> int:
    """Put faces nobody holds into their unknown cluster or noise id (``face_id → id``): only faces nobody holds
    whose group differs are written (one executemany UPDATE). The payload does not carry the cluster, so nothing is
    marked dirty. Returns how many changed."""
    table = FaceInstance.__table__
    ids = list(wanted)
    changes: list[dict] = []
    for i in range(0, len(ids), chunk):
        rows = session.execute(select(table.c.face_id, table.c.cluster_id).where(table.c.face_id.in_(ids[i : i + chunk]), table.c.person_id.is_(None)))
        changes += [{"_face_id": f, "cluster_id": wanted[f]} for f, c in rows if c != wanted[f]]
    if changes:
        session.execute(update(table).where(table.c.face_id == bindparam("_face_id"), table.c.person_id.is_(None))
                        .values(cluster_id=bindparam("cluster_id")), changes)
    return len(changes)


# ------------------------------------------------------------------------------------------------- reads ----
def faces_by_id(session: Session, face_ids: Iterable[str], chunk: int = 900) -> Iterator[FaceInstance]:
    """Face rows for many ids, in chunks under every database's bound-parameter limit (SQLite: 999)."""
    ids = list(face_ids)
    for i in range(0, len(ids), chunk):
        yield from session.scalars(select(FaceInstance).where(FaceInstance.face_id.in_(ids[i : i + chunk])))


def payload_of(face: FaceInstance, batch: str | None = None) -> dict:
    """The Qdrant payload of one face, always built from the SQL row (SQL is the source of truth).

    ``indexed_at`` is added by the vector store when it writes a point."""
    return {
        "face_id": face.face_id,
        "image_id": face.image_id,
        "bbox": [round(face.x1, 1), round(face.y1, 1), round(face.x2, 1), round(face.y2, 1)],
        "person_id": face.person_id,
        "person_confidence": face.person_confidence,
        "det_score": round(face.det_score, 4),
        "quality_score": face.quality_score,
        "batch": batch if batch is not None else face.batch,
    }


def payload_snapshot(face: FaceInstance) -> dict:
    """The column values a pushed payload was built from (see :mod:`sync`)."""
    return {c: getattr(face, c) for c in PAYLOAD_COLUMNS}


def best_first_key(face: FaceInstance) -> tuple:
    """Which of two faces of one photo keeps a person: a human label first, then the better face."""
    q = face.quality_score if face.quality_score is not None else -1.0
    return (face.assignment_source in HUMAN_SOURCES, q, face.det_score or 0.0, face.face_id)


__all__: Sequence[str] = (
    "HUMAN_CONFIDENCE", "NOISE_PREFIX", "PAYLOAD_COLUMNS", "PAYLOAD_FIELDS", "PERSON_ID_RE", "UNKNOWN_CLUSTER_PREFIX",
    "assign", "best_first_key", "faces_by_id", "is_human", "is_noise", "is_person_id", "is_unknown_cluster",
    "new_person_id", "noise_id", "payload_of", "payload_snapshot", "set_unknown_groups", "unassign",
    "unknown_cluster_id", "unknown_cluster_number", "write_pipeline_decision", "write_pipeline_decisions",
)
