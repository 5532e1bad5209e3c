"""Undo from the "recent changes" list, where the operation allows it — always by applying the inverse label
operation (a new event that says ``undo of event N``), never by rewriting the log.

Undoable, while nothing changed the face or person since:
- a face moved or named (``label_face``, ``reassign_face``, one face of a ``label_cluster``): back to its previous
  person (a manual label), or unassigned when it had none;
- ``reject_face`` that took the face from the person: the face is labelled that person again (which withdraws the
  rejection);
- ``hide_person`` / ``unhide_person``: the opposite;
- ``split_person`` (its person-level event): the new person is merged back into the one it was split from.

A face whose naming is undone has no person and no group until the next organise run (the label operations
clear ``cluster_id`` so clustering picks it up again): it reappears among the unknown groups after a re-cluster
(the label-change sensor under ``make dev``, or "Re-cluster" on the page).

Not undoable: merges (the merged person's identity is gone), deletions (the name is erased by design), renames
(the log never holds names), automatic assignments.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy.orm import Session

from face_pipeline.core import labels
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import (
    PERSON_ACTIVE,
    PERSON_HIDDEN,
    FaceAssignmentEvent,
    FaceInstance,
    Person,
)
from face_pipeline.core.errors import Conflict, NotFound
from face_pipeline.settings import Settings

FACE_MOVES = ("label_face", "reassign_face", "label_cluster")

Plan = Callable[[Settings, str, str], object]  # (settings, actor, reason) -> LabelResult


def _active(s: Session, pid: str | None) -> bool:
    p = s.get(Person, pid) if pid else None
    return p is not None and p.status == PERSON_ACTIVE


def undo_plan(s: Session, e: FaceAssignmentEvent) -> Plan | None:
    """The inverse operation of event ``e`` if it still applies, else None."""
    if e.action in FACE_MOVES and e.face_id and e.to_person:
        f = s.get(FaceInstance, e.face_id)
        if f is None or f.person_id != e.to_person:
            return None
        if e.from_person is None:
            return lambda st, actor, reason: labels.unassign_face(st, e.face_id, actor=actor, reason=reason)
        if _active(s, e.from_person):
            return lambda st, actor, reason: labels.reassign_face(st, e.face_id, e.from_person, actor=actor, reason=reason)
        return None
    if e.action == "reject_face" and e.face_id:
        rejected = (e.details or {}).get("rejected_person")
        f = s.get(FaceInstance, e.face_id)
        if rejected and e.from_person == rejected and f is not None and f.person_id is None and _active(s, rejected):
            return lambda st, actor, reason: labels.label_face(st, e.face_id, rejected, actor=actor, reason=reason)
        return None
    if e.action in ("hide_person", "unhide_person") and e.face_id is None and e.from_person:
        p = s.get(Person, e.from_person)
        now = PERSON_HIDDEN if e.action == "hide_person" else PERSON_ACTIVE
        if p is None or p.status != now:
            return None
        op = labels.unhide_person if e.action == "hide_person" else labels.hide_person
        return lambda st, actor, reason: op(st, e.from_person, actor=actor, reason=reason)
    if e.action == "split_person" and e.face_id is None and e.from_person and e.to_person:
        if _active(s, e.from_person) and _active(s, e.to_person):
            return lambda st, actor, reason: labels.merge_persons(st, [e.to_person], e.from_person, actor=actor, reason=reason)
    return None


def undo_event(settings: Settings, event_id: int, actor: str):
    with session_scope(settings.sql_url) as s:
        e = s.get(FaceAssignmentEvent, event_id)
        if e is None:
            raise NotFound(f"no event with id {event_id}")
        plan = undo_plan(s, e)
    if plan is None:
        raise Conflict(f"event {event_id} ({e.action}) cannot be undone: the operation does not allow it or something changed since")
    return plan(settings, actor, f"undo of event {event_id}")
