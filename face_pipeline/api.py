"""The Python API: one object per library home, with the label operations and read views as real methods.

    from face_pipeline.api import FacePipeline
    fp = FacePipeline(home="~/photos/.face_pipeline")
    fp.label_cluster("unknown_cluster_3", "Alice")
    fp.find_person("party.jpg")

Every method calls the same core function the CLI and the web app call (:mod:`face_pipeline.core.labels`,
:mod:`face_pipeline.core.lookup`, :mod:`face_pipeline.core.report`) with this home's settings bound, so all front
ends behave identically and log the same events. Errors are the typed ones of :mod:`face_pipeline.core.errors`
(``InvalidInput``, ``NotFound``, ``Conflict``, ``LibraryNotReady``; all are ``LabelError``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from face_pipeline.core import labels, lookup, report
from face_pipeline.core import suggestions  # suggestions queue (methods below)
from face_pipeline.core.labels import (
    ClusterInfo,
    EventInfo,
    FaceMatch,
    LabelResult,
    PersonInfo,
    PersonSummary,
    SearchHit,
)
from face_pipeline.home import prepare_home
from face_pipeline.settings import Settings


class FacePipeline:
    """A library home. Keyword overrides are settings fields (e.g. ``person_match_threshold=0.45``)."""

    def __init__(self, home: str | Path | None = None, **overrides: Any):
        if home is not None:
            overrides["home"] = Path(home).expanduser()
        self.settings = Settings(**overrides)
        prepare_home(self.settings, set_dagster_home=False)

    # --- naming ------------------------------------------------------------------------------------------------
    def label_cluster(self, cluster_id: str, name: str, *, actor: str = "user", reason: str | None = None,
                      merge: bool = False) -> LabelResult:
        """Name every face of an unknown cluster; an existing person's name is a Conflict unless ``merge``."""
        return labels.label_cluster(self.settings, cluster_id, name, actor=actor, reason=reason, merge=merge)

    def label_face(self, face_id: str, name: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
        """Say who one face is; clears an earlier "not this person" for that pair."""
        return labels.label_face(self.settings, face_id, name, actor=actor, reason=reason)

    def reassign_face(self, face_id: str, to: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
        """Move a face to another person (logged as a correction)."""
        return labels.reassign_face(self.settings, face_id, to, actor=actor, reason=reason)

    def assign_person(self, face_id: str, *, actor: str = "user", reason: str | None = None) -> str | None:
        """Let automation decide one face now (never over a human label); returns its person or ``None``."""
        return labels.assign_person(self.settings, face_id, actor=actor, reason=reason)

    def reject_face(self, face_id: str, person: str | None = None, *, actor: str = "user", reason: str | None = None) -> LabelResult:
        """"This face is not that person" (default: its current person); automation never proposes it again."""
        return labels.reject_face(self.settings, face_id, person, actor=actor, reason=reason)

    def unassign_face(self, face_id: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
        """Take a face's person away; it returns to clustering."""
        return labels.unassign_face(self.settings, face_id, actor=actor, reason=reason)

    # --- people ------------------------------------------------------------------------------------------------
    def merge_persons(self, sources: Sequence[str] | str, target: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
        """Merge ``sources`` into ``target``: their faces move, the sources become ``merged``."""
        return labels.merge_persons(self.settings, sources, target, actor=actor, reason=reason)

    def split_person(self, person: str, face_ids: Sequence[str], new_name: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
        """Move some of a person's faces to a new person."""
        return labels.split_person(self.settings, person, face_ids, new_name, actor=actor, reason=reason)

    def hide_person(self, person: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
        """Hide a person from lists; their faces stay theirs."""
        return labels.hide_person(self.settings, person, actor=actor, reason=reason)

    def unhide_person(self, person: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
        return labels.unhide_person(self.settings, person, actor=actor, reason=reason)

    def rename_person(self, person: str, new_name: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
        """Rename a person; refused when another person has the name (merge instead)."""
        return labels.rename_person(self.settings, person, new_name, actor=actor, reason=reason)

    def delete_person(self, person: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
        """Erase a person (and persons merged into it); their faces return to clustering."""
        return labels.delete_person(self.settings, person, actor=actor, reason=reason)

    # --- views -------------------------------------------------------------------------------------------------
    def get_person(self, person: str) -> PersonInfo:
        return labels.get_person(self.settings, person)

    def list_persons(self, include_hidden: bool = False) -> list[PersonSummary]:
        return labels.list_persons(self.settings, include_hidden=include_hidden)

    def list_clusters(self) -> list[ClusterInfo]:
        """Unknown clusters, largest first (one-face noise excluded)."""
        return labels.list_clusters(self.settings)

    def recent_events(self, since_id: int = 0, limit: int = 100) -> list[EventInfo]:
        """The change log after ``since_id``, oldest first."""
        return labels.recent_events(self.settings, since_id=since_id, limit=limit)

    # ---- suggestions (owner: face_pipeline.core.suggestions) -------------------------------------------------
    def list_suggestions(self, kind: str | None = None, status: str | None = "open", limit: int = 50,
                         offset: int = 0) -> list[suggestions.SuggestionInfo]:
        """Questions for a person ("is this X?", "the same person?"), the answers that settle most faces first.
        ``status``: open (default), accepted, rejected, stale or all; ``kind``: face_is_person, cluster_is_person,
        check_names, same_person or None for all. Questions about names already given come first."""
        return suggestions.list_suggestions(self.settings, kind=kind, status=status, limit=limit, offset=offset)

    def count_suggestions(self, kind: str | None = None, status: str | None = "open") -> int:
        """How many suggestions :meth:`list_suggestions` pages through."""
        return suggestions.count_suggestions(self.settings, kind=kind, status=status)

    def get_suggestion(self, suggestion_id: int) -> suggestions.SuggestionInfo:
        """One suggestion with all its faces (``NotFound`` for an unknown id)."""
        return suggestions.get_suggestion(self.settings, suggestion_id)

    def accept_suggestion(self, suggestion_id: int, *, actor: str = "user", name: str | None = None) -> LabelResult:
        """Answer yes: the faces become the person, two people are merged, or two unnamed groups are linked (and
        named ``name`` when given). Through the label operations; ``Conflict`` if already answered or stale."""
        return suggestions.accept_suggestion(self.settings, suggestion_id, actor=actor, name=name)

    def reject_suggestion(self, suggestion_id: int, *, actor: str = "user") -> LabelResult:
        """Answer no: "not this person" for the faces, or "different people"; never proposed again."""
        return suggestions.reject_suggestion(self.settings, suggestion_id, actor=actor)

    def stats(self) -> dict:
        return report.library_stats(self.settings)

    def export_frame(self):
        """One row per face (pandas DataFrame), as ``face-pipeline export`` writes it."""
        return report.export_frame(self.settings)

    # --- photos outside the library ----------------------------------------------------------------------------
    def find_person(self, image_path: str | Path) -> list[FaceMatch]:
        """Who is in a photo (need not be in the library)."""
        return lookup.find_person(self.settings, image_path)

    def search(self, image_path: str | Path, limit: int = 10) -> list[SearchHit]:
        """The nearest library faces to each face of a photo."""
        return lookup.search(self.settings, image_path, limit=limit)
