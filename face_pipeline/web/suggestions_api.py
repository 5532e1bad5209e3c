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
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        d = dataclasses.asdict(obj)
    elif isinstance(obj, dict):
        d = dict(obj)
    else:
        d = {k: getattr(obj, k) for k in dir(obj) if not k.startswith("_") and not callable(getattr(obj, k))}
    for k, v in list(d.items()):
        if isinstance(v, tuple):
            d[k] = list(v)
    return d


def _with_names(settings: Settings, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pids = sorted({i.get(k) for i in items for k in ("person_id", "other_person_id") if i.get(k)})
    names: dict[str, str] = {}
    if pids:
        with session_scope(settings.sql_url) as s:
            names = dict(s.execute(select(Person.person_id, Person.name).where(Person.person_id.in_(pids))).all())
    covers: dict[str, str] = {}
    if pids:
        from face_pipeline.web.views import _covers

        with session_scope(settings.sql_url) as s:
            covers = _covers(s, pids)
    for i in items:
        i["person_name"] = names.get(i.get("person_id"))
        i["other_person_name"] = names.get(i.get("other_person_id"))
        i["person_cover_face_id"] = covers.get(i.get("person_id"))
        i["other_person_cover_face_id"] = covers.get(i.get("other_person_id"))
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
    total, page = 0, 500
    while True:  # the contract has no count function; pages of 500 keep this bounded and cheap
        rows = core_suggestions.list_suggestions(settings, status="open", limit=page, offset=total)
        total += len(rows)
        if len(rows) < page:
            return total
