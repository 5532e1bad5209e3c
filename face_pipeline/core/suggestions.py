"""Suggestions: where the evidence says "probably X" but not enough to name, the product asks instead of guessing.

Contract shared by the naming rules (which *produce* suggestions during organise) and the suggestion queue
(which stores them, lists them and turns answers into label operations). The types below are the contract; the
storage and answer functions are filled in by the suggestion-queue work.

Kinds:
- ``face_is_person``: one face → a candidate person ("is this X?").
- ``cluster_is_person``: a group of unnamed faces (an unknown cluster) → a candidate person.
- ``same_person``: two groups that may be one person: two people (``person_id`` and ``other_person_id``), a
  group of faces and a person, or two unnamed groups (``face_ids`` and ``other_face_ids``).

Answers go through the label operations: yes = a human label or a merge; no = "not this person" (a rejection) or,
for two unnamed groups, a "different people" constraint the clustering honours. A rejected suggestion is never
proposed again; an answered one is never overwritten by automation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SuggestionKind = Literal["face_is_person", "cluster_is_person", "same_person"]
SUGGESTION_KINDS: tuple[str, ...] = ("face_is_person", "cluster_is_person", "same_person")


@dataclass(frozen=True)
class Suggestion:
    """One question for a person, as produced by organise (not yet stored).

    ``score`` is the evidence (a cosine similarity, or the cluster-level equivalent); ``bar`` is what automatic
    naming would have needed. The queue is ordered by :attr:`priority`: how many faces an answer settles times how
    close the evidence is to the bar, so the answers that teach the most come first.
    """

    kind: SuggestionKind
    face_ids: tuple[str, ...]
    person_id: str | None = None
    other_person_id: str | None = None
    other_face_ids: tuple[str, ...] = ()
    score: float = 0.0
    bar: float = 0.0
    cluster_id: str | None = None  # display only: the unknown cluster holding face_ids, when there is one
    other_cluster_id: str | None = None

    @property
    def settles(self) -> int:
        return len(self.face_ids) + len(self.other_face_ids)

    @property
    def priority(self) -> float:
        closeness = 1.0 if self.bar <= 0 else max(0.0, min(1.0, self.score / self.bar))
        return self.settles * closeness
