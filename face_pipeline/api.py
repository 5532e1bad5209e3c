"""The Python API: one object per library home, exposing every label operation and the read views.

    from face_pipeline.api import FacePipeline
    fp = FacePipeline(home="~/photos/.face_pipeline")
    fp.label_cluster("unknown_cluster_3", "Alice")
    fp.find_person("party.jpg")

The methods are the functions of :mod:`face_pipeline.core.labels` (and :mod:`report`) with the settings
bound, so the API, the CLI and a web page behave identically and log the same events.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from face_pipeline.core import labels, report
from face_pipeline.core import suggestions  # suggestions queue (methods below)
from face_pipeline.home import prepare_home
from face_pipeline.settings import Settings

LABEL_OPERATIONS = (
    "label_cluster", "label_face", "assign_person", "get_person", "list_persons", "merge_persons", "split_person",
    "reassign_face", "reject_face", "unassign_face", "hide_person", "unhide_person", "rename_person", "delete_person",
    "list_clusters", "find_person", "search", "recent_events",
)


class FacePipeline:
    """A library home. Keyword overrides are settings fields (e.g. ``person_match_threshold=0.45``)."""

    def __init__(self, home: str | Path | None = None, **overrides: Any):
        if home is not None:
            overrides["home"] = Path(home).expanduser()
        self.settings = Settings(**overrides)
        prepare_home(self.settings, set_dagster_home=False)

    def __getattr__(self, name: str):
        if name in LABEL_OPERATIONS:
            return functools.partial(getattr(labels, name), self.settings)
        raise AttributeError(name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(LABEL_OPERATIONS))

    # ---- suggestions (owner: face_pipeline.core.suggestions) -------------------------------------------------
    def list_suggestions(self, kind: str | None = None, status: str | None = "open", limit: int = 50,
                         offset: int = 0) -> list[suggestions.SuggestionInfo]:
        """Questions for a person ("is this X?", "the same person?"), the answers that settle most faces first.
        ``status``: open (default), accepted, rejected, stale or all; ``kind``: face_is_person, cluster_is_person,
        same_person or None for all."""
        return suggestions.list_suggestions(self.settings, kind=kind, status=status, limit=limit, offset=offset)

    def count_suggestions(self, kind: str | None = None, status: str | None = "open") -> int:
        """How many suggestions :meth:`list_suggestions` pages through."""
        return suggestions.count_suggestions(self.settings, kind=kind, status=status)

    def get_suggestion(self, suggestion_id: int) -> suggestions.SuggestionInfo:
        """One suggestion with all its faces (``NotFound`` for an unknown id)."""
        return suggestions.get_suggestion(self.settings, suggestion_id)

    def accept_suggestion(self, suggestion_id: int, *, actor: str = "user", name: str | None = None) -> labels.LabelResult:
        """Answer yes: the faces become the person, two people are merged, or two unnamed groups are linked (and
        named ``name`` when given). Through the label operations; ``Conflict`` if already answered or stale."""
        return suggestions.accept_suggestion(self.settings, suggestion_id, actor=actor, name=name)

    def reject_suggestion(self, suggestion_id: int, *, actor: str = "user") -> labels.LabelResult:
        """Answer no: "not this person" for the faces, or "different people"; never proposed again."""
        return suggestions.reject_suggestion(self.settings, suggestion_id, actor=actor)

    def stats(self) -> dict:
        return report.library_stats(self.settings)

    def export_frame(self):
        return report.export_frame(self.settings)
