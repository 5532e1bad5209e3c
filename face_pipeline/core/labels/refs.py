"""How a user's references resolve: person ids and exact names, face ids, and the rows behind them.

Shared by the commands and the read views so both understand "Alice" and ``person_…`` the same way: a reference
is a person id (any status, so a merged id can be explained) or the exact name of an active or hidden person;
an ambiguous name is an error that lists the ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from face_pipeline.core.db.schema import PERSON_ACTIVE, PERSON_HIDDEN, PHOTO_OK, FaceInstance, Person, Photo
from face_pipeline.core.errors import InvalidInput, NotFound


def clean_ref(ref: str | None, what: str = "person") -> str:
    ref = (ref or "").strip()
    if not ref:
        raise InvalidInput(f"{what} must not be empty")
    return ref



def get_face(s: Session, face_id: str) -> FaceInstance:
    face = s.get(FaceInstance, clean_ref(face_id, "face id"))
    if face is None:
        raise NotFound(f"no face with id {face_id!r}")
    return face



def resolve_person(session: Session, ref: str) -> Person:
    """The person a reference means: a person id (any status, so a merged id can be explained), or the exact name
    of an active or hidden person. Ambiguous names raise :class:`LabelError` listing the candidate ids."""
    ref = clean_ref(ref)
    person = session.get(Person, ref)
    if person is not None:
        return person
    matches = list(session.scalars(
        select(Person).where(Person.name == ref, Person.status.in_((PERSON_ACTIVE, PERSON_HIDDEN))).order_by(Person.person_id)
    ))
    if not matches:
        raise NotFound(f"no person with id or name {ref!r}")
    if len(matches) > 1:
        ids = ", ".join(f"{m.person_id} ({m.status})" for m in matches)
        raise InvalidInput(f"name {ref!r} is ambiguous: {ids}; use a person id")
    return matches[0]



def faces_of(s: Session, person_ids: Iterable[str]) -> list[FaceInstance]:
    ids = list(person_ids)
    if not ids:
        return []
    return list(s.scalars(select(FaceInstance).where(FaceInstance.person_id.in_(ids)).order_by(FaceInstance.face_id)))



def photo_paths(s: Session, image_ids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    ids = list(image_ids)
    for i in range(0, len(ids), 500):
        rows = s.execute(select(Photo.image_id, Photo.path).where(Photo.image_id.in_(ids[i : i + 500]), Photo.status == PHOTO_OK).order_by(Photo.id))
        for image_id, path in rows:
            out.setdefault(image_id, path)
    return out
