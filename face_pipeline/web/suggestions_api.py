"""The suggestion queue as the web sees it: :mod:`face_pipeline.core.suggestions` (list / get / accept / reject),
plus what a page needs to show one question (the faces, the candidate's cover face and name).

The queue's storage is owned by the suggestions module; this adapter only reads its public functions. Where that
module has no queue yet (an older library), listing answers "none" and answering is a 503 saying so.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import select

from face_pipeline.core import suggestions as core_suggestions
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import Person
from face_pipeline.core.errors import LibraryNotReady
from face_pipeline.settings import Settings


def available() -> bool:
    return all(hasattr(core_suggestions, n) for n in ("list_suggestions", "get_suggestion", "accept_suggestion", "reject_suggestion"))


def _need() -> None:
    if not available():
        raise LibraryNotReady("this build has no suggestion queue yet (face_pipeline.core.suggestions lacks list/accept/reject)")


def _plain(obj: Any) -> dict[str, Any]:
    """A suggestion as JSON-ready data, whatever shape the queue returns (its ``SuggestionInfo`` with nested
    person and face records, or a flat record). Normalised so the page and API clients always find ``face_ids``,
    ``other_face_ids``, ``person_id``/``person_name``/``person_cover_face_id`` (and ``other_…``), ``evidence_face_id`` (the
    candidate's face the evidence points at, or null) and ``question``. File paths are dropped: photos are served by id only."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        d = dataclasses.asdict(obj)
    elif isinstance(obj, dict):
        d = dict(obj)
    else:
        d = {k: getattr(obj, k) for k in dir(obj) if not k.startswith("_") and not callable(getattr(obj, k))}
    question = getattr(obj, "question", None)
    if isinstance(question, str):
        d["question"] = question
    for side, faces_key, ids_key in (("", "faces", "face_ids"), ("other_", "other_faces", "other_face_ids")):
        faces = d.get(faces_key)
        if isinstance(faces, list) and faces and isinstance(faces[0], dict):
            for f in faces:
                f.pop("photo_path", None)
            d.setdefault(ids_key, [f["face_id"] for f in faces])
        d[ids_key] = list(d.get(ids_key) or [])
        person = d.get(f"{side}person")
        if isinstance(person, dict):
            d.setdefault(f"{side}person_id", person.get("person_id"))
            d.setdefault(f"{side}person_name", person.get("name"))
            d.setdefault(f"{side}person_cover_face_id", person.get("cover_face_id"))
    evidence = d.get("evidence_face")
    if isinstance(evidence, dict):
        evidence.pop("photo_path", None)
        d.setdefault("evidence_face_id", evidence.get("face_id"))
    d.setdefault("evidence_face_id", None)
    for k, v in list(d.items()):
        if isinstance(v, tuple):
            d[k] = list(v)
    return d


def _with_names(settings: Settings, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Names and cover faces for suggestions that carry only person ids."""
    missing = sorted({i.get(k) for i in items for k in ("person_id", "other_person_id")
                      if i.get(k) and not i.get(k.replace("_id", "_name"))})
    names: dict[str, str] = {}
    covers: dict[str, str] = {}
    if missing:
        from face_pipeline.web.views import _covers

        with session_scope(settings.sql_url) as s:
            names = dict(s.execute(select(Person.person_id, Person.name).where(Person.person_id.in_(missing))).all())
            covers = _covers(s, missing)
    for i in items:
        for side in ("", "other_"):
            pid = i.get(f"{side}person_id")
            if pid and not i.get(f"{side}person_name"):
                i[f"{side}person_name"] = names.get(pid)
            if pid and not i.get(f"{side}person_cover_face_id"):
                i[f"{side}person_cover_face_id"] = covers.get(pid)
            i.setdefault(f"{side}person_name", None)
            i.setdefault(f"{side}person_cover_face_id", None)
    return items


def list_open(settings: Settings, kind: str | None = None, status: str = "open", limit: int = 50, offset: int = 0) -> list[dict]:
    _need()
    rows = core_suggestions.list_suggestions(settings, kind=kind, status=status, limit=limit, offset=offset)
    return _with_names(settings, [_plain(r) for r in rows])


def get(settings: Settings, suggestion_id: int) -> dict:
    _need()
    return _with_names(settings, [_plain(core_suggestions.get_suggestion(settings, suggestion_id))])[0]


def accept(settings: Settings, suggestion_id: int, actor: str, name: str | None = None):
    _need()
    return core_suggestions.accept_suggestion(settings, suggestion_id, actor=actor, name=name)


def reject(settings: Settings, suggestion_id: int, actor: str):
    _need()
    return core_suggestions.reject_suggestion(settings, suggestion_id, actor=actor)


def open_count(settings: Settings) -> int | None:
    """Open suggestions (for the health panel); None when there is no queue."""
    if not available():
        return None
    if hasattr(core_suggestions, "count_suggestions"):
        return core_suggestions.count_suggestions(settings, status="open")
    total, page = 0, 500
    while True:  # no count function: pages of 500 keep this bounded
        rows = core_suggestions.list_suggestions(settings, status="open", limit=page, offset=total)
        total += len(rows)
        if len(rows) < page:
            return total
