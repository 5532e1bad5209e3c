"""The people commands and views: what a person does with names and faces, and what they can look at.

One room per concept: :mod:`.commands` (every human change, each an event), :mod:`.views` (read-only listings),
:mod:`.refs` (how "Alice" or ``person_…`` resolves), :mod:`.evidence` (what human labels say about a person),
:mod:`.results` (what the operations return). Photos outside the library (``find_person``, ``search``) live in
:mod:`face_pipeline.core.lookup`. The names below are the public surface the CLI, the Python API and the web app
use.
"""

from face_pipeline.core.errors import LabelError
from face_pipeline.core.labels.commands import (
    assign_person,
    delete_person,
    hide_person,
    label_cluster,
    label_face,
    merge_persons,
    reassign_face,
    reject_face,
    rename_person,
    split_person,
    unassign_face,
    unhide_person,
)
from face_pipeline.core.labels.refs import resolve_person
from face_pipeline.core.labels.results import (
    ClusterInfo,
    EventInfo,
    FaceMatch,
    LabelResult,
    PersonInfo,
    PersonSummary,
    SearchHit,
)
from face_pipeline.core.labels.views import get_person, list_clusters, list_persons, recent_events

__all__ = [
    "ClusterInfo", "EventInfo", "FaceMatch", "LabelError", "LabelResult", "PersonInfo", "PersonSummary", "SearchHit",
    "assign_person", "delete_person", "find_person", "get_person", "hide_person", "label_cluster", "label_face",
    "list_clusters", "list_persons", "merge_persons", "reassign_face", "recent_events", "reject_face",
    "rename_person", "resolve_person", "search", "split_person", "unassign_face", "unhide_person",
]


def __getattr__(name: str):
    """``find_person`` / ``search`` live in :mod:`face_pipeline.core.lookup`, which itself imports this package's
    evidence and results; resolving them on first use keeps either import order free of a cycle."""
    if name in ("find_person", "search"):
        from face_pipeline.core import lookup

        return getattr(lookup, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
