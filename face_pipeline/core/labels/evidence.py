"""What the human labels say about each person: prototypes built from human-labelled faces only.

Automatic assignments are never evidence: letting them define a person would let one wrong match pull in more
(self-training drift). Confirmed suggestions are human labels, so they count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from face_pipeline.core.assign import Prototypes, build_prototypes
from face_pipeline.core.db.schema import HUMAN_SOURCES, FaceInstance, Person
from face_pipeline.core.embedding_files import load_embeddings
from face_pipeline.settings import Settings


def human_prototypes(s: Session, settings: Settings, statuses: Sequence[str], exclude: Iterable[str] = ()) -> Prototypes | None:
    """Prototypes of persons with the given statuses from their human-labelled faces only: automatic
    assignments are not evidence (they would let one wrong match pull in more)."""
    skip = set(exclude)
    rows = s.execute(
        select(FaceInstance.face_id, FaceInstance.person_id)
        .join(Person, Person.person_id == FaceInstance.person_id)
        .where(FaceInstance.assignment_source.in_(HUMAN_SOURCES), Person.status.in_(tuple(statuses)))
    ).all()
    owner = {fid: pid for fid, pid in rows if fid not in skip}
    if not owner:
        return None
    ids, X = load_embeddings(settings, face_ids=owner)
    if not ids:
        return None
    return build_prototypes(X, [owner[f] for f in ids])
