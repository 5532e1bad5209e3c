"""Naming a cluster with a name somebody already has must ask, not silently merge (issue 10): the check the web
API and the CLI's ``label-cluster`` share before calling :func:`face_pipeline.core.labels.label_cluster`.

Kept free of web imports so the CLI can use it cheaply. Its natural home is a ``merge`` keyword of
``labels.label_cluster`` itself; until then both front ends call this first.
"""

from __future__ import annotations

from sqlalchemy import select

from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import (
    PERSON_ACTIVE,
    PERSON_HIDDEN,
    FaceInstance,
    Person,
)
from face_pipeline.core.errors import Conflict
from face_pipeline.core.face_state import is_person_id
from face_pipeline.settings import Settings


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
