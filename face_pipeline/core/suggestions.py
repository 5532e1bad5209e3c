"""Suggestions: where the evidence says "probably X" but not enough to name, the product asks instead of guessing.

Contract shared by the naming rules (which *produce* suggestions during organise) and the suggestion queue
(which stores them, lists them and turns answers into label operations). :class:`Suggestion` is the contract;
below it, the queue: :func:`replace_pipeline_suggestions` (organise), :func:`list_suggestions` /
:func:`get_suggestion` / :func:`count_suggestions` (front ends), :func:`accept_suggestion` /
:func:`reject_suggestion` (answers), and the pair constraints clustering honours (:func:`must_link_pairs`,
:func:`cannot_link_pairs`, :func:`cannot_link_persons`).

Kinds:
- ``face_is_person``: one face → a candidate person ("is this X?").
- ``cluster_is_person``: a group of unnamed faces (an unknown cluster) → a candidate person.
- ``check_names``: a group of faces automation *named* on its weakest tie (their stricter group holds no label) →
  that person: "are these X?". Yes makes them human labels; no takes the name away and it is never given again.
  Listed before every other kind: a wrong name is far worse than a missing one.
- ``same_person``: two groups that may be one person: two people (``person_id`` and ``other_person_id``), a
  group of faces and a person, or two unnamed groups (``face_ids`` and ``other_face_ids``).

Answers go through the label operations: yes = a human label or a merge; no = "not this person" (a rejection) or,
for two unnamed groups, a "different people" constraint the clustering honours. A rejected suggestion is never
proposed again; an answered one is never overwritten by automation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Iterable, Iterator, Literal, Sequence

from sqlalchemy import and_, case, exists, func, insert, not_, or_, select, update
from sqlalchemy.orm import Session

from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import (
    HUMAN_SOURCES,
    PERSON_ACTIVE,
    PHOTO_OK,
    PIPELINE_ACTOR,
    SUGGESTION_ACCEPTED,
    SUGGESTION_OPEN,
    SUGGESTION_REJECTED,
    SUGGESTION_STALE,
    SUGGESTION_STATUSES,
    FaceAssignmentEvent,
    FaceInstance,
    FacePairConstraint,
    FaceRejection,
    Person,
    Photo,
    SuggestionFace,
    SuggestionRecord,
    utcnow,
)
from face_pipeline.core.errors import Conflict, InvalidInput, NotFound

if TYPE_CHECKING:
    from face_pipeline.core.labels import LabelResult
    from face_pipeline.settings import Settings

log = logging.getLogger(__name__)

SuggestionKind = Literal["face_is_person", "cluster_is_person", "check_names", "same_person"]
SUGGESTION_KINDS: tuple[str, ...] = ("face_is_person", "cluster_is_person", "check_names", "same_person")
#: Kinds that always ask "are these faces this person?" (one group of faces, one candidate).
TO_PERSON_KINDS: tuple[str, ...] = ("face_is_person", "cluster_is_person", "check_names")
#: Kinds whose questions are about names automation already gave: listed first (a wrong name is far worse than a
#: missing one, so the answers that take wrong names away come before those that add names).
CHECKS_FIRST: tuple[str, ...] = ("check_names",)


@dataclass(frozen=True)
class Suggestion:
    """One question for a person, as produced by organise (not yet stored).

    ``score`` is the evidence (a face's score against the person; for a group without labels, the median of its
    faces' scores; for a step of a chain of the person's own photos, the cosine of the closest pair); ``bar`` is what automatic
    naming would have needed; ``floor`` is where the evidence starts to mean anything: the model's impostor bar
    (naming rule 3), the score two different people reach by chance (0 for a group that holds the person's labels:
    the labels are the evidence there). The queue is ordered by :attr:`priority`: how
    many faces an answer settles times how far the evidence has come from the floor towards the bar, so the answers
    that teach the most come first. A score just above the impostor bar is what a stranger who resembles the person
    gets; counting it as most of the way to the bar (``score / bar``, as when no floor is given) put a 32-face
    stranger's group at 0.30 ahead of a person's own 22 younger photos at 0.45 (synthetic ageing library). For a
    name already given (``check_names``): how close its evidence stayed to the bar from above, the most doubtful
    names first.
    """

    kind: SuggestionKind
    face_ids: tuple[str, ...]
    person_id: str | None = None
    other_person_id: str | None = None
    other_face_ids: tuple[str, ...] = ()
    score: float = 0.0
    bar: float = 0.0
    floor: float = 0.0
    cluster_id: str | None = None  # display only: the unknown cluster holding face_ids, when there is one
    other_cluster_id: str | None = None
    #: Display only: the candidate person's face the evidence points at (a chain step's start, else their label the
    #: faces are most like), shown beside the question; not part of what the question is (its fingerprint).
    evidence_face_id: str | None = None

    @property
    def settles(self) -> int:
        return len(self.face_ids) + len(self.other_face_ids)

    @property
    def closeness(self) -> float:
        """How close the evidence came to the bar, in [0, 1] (the second factor of :attr:`priority`); 0 for a score
        that is not a number (no evidence: ``min(1, nan)`` would have put it first)."""
        if not math.isfinite(self.score):
            return 0.0
        if self.kind in CHECKS_FIRST:  # a name given: the nearer its evidence to the bar, the more doubtful
            return 1.0 if self.score <= 0 else max(0.0, min(1.0, self.bar / self.score))
        if self.bar <= 0:
            return 1.0
        if self.bar <= self.floor:  # no span to measure in (a learned space: nobody measured its impostor range)
            return max(0.0, min(1.0, self.score / self.bar))
        return max(0.0, min(1.0, (self.score - self.floor) / (self.bar - self.floor)))

    @property
    def priority(self) -> float:
        return self.settles * self.closeness


# ==============================================================================================================
# The suggestion queue: storage (``suggestions``, ``suggestion_faces``, ``face_pair_constraints`` in
# ``db.schema``), listing, and answers turned into label operations.
#
# How a question is identified. Every stored suggestion is reduced to one of three *shapes*:
# - ``faces → person`` (``face_is_person``, ``cluster_is_person``, and ``same_person`` between a group of faces and
#   a person): the faces are side 0, the candidate is ``person_id``;
# - ``person = person`` (``same_person`` between two people): ``person_id < other_person_id``, no faces;
# - ``group = group`` (``same_person`` between two unnamed groups): side 0 is the group whose smallest face id
#   is smaller, side 1 the other.
# The fingerprint of (kind, shape, persons, face sets) names the question: organise re-proposing an unchanged
# question keeps its row (and id, which a web page may be showing), answered questions are never asked again.
#
# When a question is "the same as" a rejected one (and so never proposed again):
# - faces → person: any face already rejected for that person (a ``face_rejections`` row, which rejecting such a
#   suggestion writes, or a face of a rejected suggestion about the same person) is removed from the question;
#   a question left without faces is dropped;
# - person = person: a rejected suggestion about the same two people, also after either was merged into another
#   (a merged person is the same identity as its target);
# - group = group: any answered pair constraint between the two groups (either answer: the question was
#   answered), or a rejected suggestion overlapping both groups.
# Faces a human has labelled are removed from every new question (the person already said who they are).
# ==============================================================================================================

__all__ = [
    "SUGGESTION_KINDS",
    "Suggestion",
    "SuggestionFaceInfo",
    "SuggestionInfo",
    "SuggestedPerson",
    "accept_suggestion",
    "cannot_link_pairs",
    "cannot_link_persons",
    "count_suggestions",
    "get_suggestion",
    "list_suggestions",
    "must_link_pairs",
    "reject_suggestion",
    "replace_pipeline_suggestions",
]

SHAPE_TO_PERSON, SHAPE_PERSONS, SHAPE_GROUPS = "faces_to_person", "person_pair", "group_pair"
LIST_STATUSES = (*SUGGESTION_STATUSES, "all")
STALE_KEPT = timedelta(days=7)  # superseded questions are history only briefly: organise may replace many per run
PAIR_SIDE_LIMIT = 32  # a "different people" answer about two groups stores at most 32 × 32 face pairs
LIST_FACES_PER_SIDE = 12  # faces per side in a listing (a strip on a page); get_suggestion returns them all
_CHUNK = 500


# --------------------------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SuggestionFaceInfo:
    """One face of a suggestion, with what a page needs to show it."""

    face_id: str
    image_id: str
    photo_path: str | None
    bbox: tuple[float, float, float, float]
    quality_score: float | None
    person_id: str | None  # who it is now
    assignment_source: str | None
    settled: bool  # a human already said who it is (or that it is not the candidate): an answer leaves it alone


@dataclass
class SuggestedPerson:
    """A person a suggestion names. ``name`` and ``status`` are ``None`` when the person was deleted."""

    person_id: str
    name: str | None
    status: str | None
    faces: int
    cover_face_id: str | None  # their best human-labelled face (else their best face)
    sample_face_ids: list[str] = field(default_factory=list)


@dataclass
class SuggestionInfo:
    """A stored suggestion as a page or the CLI shows it.

    ``status`` is the effective one: an ``open`` row whose subject is gone (a person deleted, merged or hidden,
    every face labelled by a human) reads as ``stale``. ``settles`` counts the faces an answer would still decide
    (for two people: the smaller one's faces, which a merge moves).
    ``faces`` / ``other_faces`` are best first (undecided, then quality); a listing truncates them to a strip,
    ``face_count`` / ``other_face_count`` are the totals."""

    id: int
    kind: str
    status: str
    score: float
    bar: float
    priority: float
    settles: int
    person: SuggestedPerson | None
    other_person: SuggestedPerson | None
    cluster_id: str | None
    other_cluster_id: str | None
    faces: list[SuggestionFaceInfo]
    other_faces: list[SuggestionFaceInfo]
    face_count: int
    other_face_count: int
    created_at: datetime | None
    updated_at: datetime | None
    answered_at: datetime | None
    actor: str | None
    answer: dict | None
    #: The candidate's face the evidence points at ("looks like this photo of X"), while it is still theirs.
    evidence_face: SuggestionFaceInfo | None = None

    @property
    def question(self) -> str:
        """The question in words (plain text: front ends escape it for their medium)."""
        def who(p: SuggestedPerson | None) -> str:
            return (p.name or p.person_id) if p else "?"

        if self.kind == "face_is_person":
            return f"Is this {who(self.person)}?"
        if self.kind == "cluster_is_person":
            return f"Are these {self.face_count} faces {who(self.person)}?"
        if self.kind == "check_names":
            these = "Is this face" if self.face_count == 1 else f"Are these {self.face_count} faces"
            return f"{these}, named {who(self.person)} automatically, {who(self.person)}?"
        if self.person and self.other_person:
            return f"Are {who(self.person)} and {who(self.other_person)} the same person?"
        if self.person:
            return f"Are these {self.face_count} faces {who(self.person)}?"
        return f"Are these two groups ({self.face_count} and {self.other_face_count} faces) the same person?"


# --------------------------------------------------------------------------------------------------------------
# Canonical questions
# --------------------------------------------------------------------------------------------------------------


def _shape(s: Suggestion) -> str:
    if s.kind == "same_person" and s.person_id and s.other_person_id:
        return SHAPE_PERSONS
    if s.kind == "same_person" and not s.person_id and not s.other_person_id:
        return SHAPE_GROUPS
    return SHAPE_TO_PERSON


def _canonical(s: Suggestion) -> Suggestion:
    """The one spelling of a question (see the module notes), or :class:`InvalidInput` for one that makes no
    sense: a producer's bug must be loud, and nothing is stored before every suggestion has been checked."""
    if s.kind not in SUGGESTION_KINDS:
        raise InvalidInput(f"unknown suggestion kind {s.kind!r} (one of {', '.join(SUGGESTION_KINDS)})")
    a = tuple(sorted({f for f in s.face_ids if f}))
    b = tuple(sorted({f for f in s.other_face_ids if f} - set(a)))
    if s.kind in TO_PERSON_KINDS:
        if not s.person_id or s.other_person_id or b:
            raise InvalidInput(f"a {s.kind} suggestion names one candidate person and one group of faces")
        if not a or (s.kind == "face_is_person" and len(a) != 1):
            raise InvalidInput(f"a {s.kind} suggestion needs {'exactly one face' if s.kind == 'face_is_person' else 'faces'}")
        return replace(s, face_ids=a, other_face_ids=(), other_cluster_id=None)
    s = replace(s, evidence_face_id=None)  # only a question about one person points at a face of theirs
    persons = [p for p in (s.person_id, s.other_person_id) if p]
    if len(persons) == 2:
        if a or b:
            raise InvalidInput("a same_person suggestion about two people carries no faces")
        if persons[0] == persons[1]:
            raise InvalidInput("a same_person suggestion needs two different people")
        p, q = sorted(persons)
        return replace(s, person_id=p, other_person_id=q, face_ids=(), other_face_ids=(), cluster_id=None, other_cluster_id=None)
    if len(persons) == 1:
        faces = a or b
        if not faces or (a and b):
            raise InvalidInput("a same_person suggestion between a person and a group carries one group of faces")
        cluster = s.cluster_id if a else s.other_cluster_id
        return replace(s, person_id=persons[0], other_person_id=None, face_ids=faces, other_face_ids=(), cluster_id=cluster,
                       other_cluster_id=None)
    if not a or not b:
        raise InvalidInput("a same_person suggestion between two unnamed groups needs faces in both groups")
    if b[0] < a[0]:
        return replace(s, face_ids=b, other_face_ids=a, cluster_id=s.other_cluster_id, other_cluster_id=s.cluster_id)
    return replace(s, face_ids=a, other_face_ids=b)


def _fingerprint(s: Suggestion) -> str:
    text = json.dumps([s.kind, _shape(s), s.person_id, s.other_person_id, list(s.face_ids), list(s.other_face_ids)])
    return hashlib.sha256(text.encode()).hexdigest()


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _chunks(items: Sequence, n: int = _CHUNK) -> Iterator[list]:
    items = list(items)
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _merged_into(s: Session) -> dict[str, str]:
    return {pid: tgt for pid, tgt in s.execute(select(Person.person_id, Person.merged_into).where(Person.merged_into.is_not(None)))}


def _resolve(pid: str, merged: dict[str, str]) -> str:
    seen = set()
    while pid in merged and pid not in seen:
        seen.add(pid)
        pid = merged[pid]
    return pid


# --------------------------------------------------------------------------------------------------------------
# Storage: what organise calls
# --------------------------------------------------------------------------------------------------------------


def replace_pipeline_suggestions(session: Session, suggestions: Sequence[Suggestion]) -> int:
    """Replace the open suggestions automation made with ``suggestions``; return how many are open now.

    Called by organise inside its own SQL session (nothing is committed here). Answered suggestions are history
    and never re-opened; a question equal to an answered or rejected one is not asked again (see the module
    notes for "equal"); faces a human labelled are left out and a question about an inactive person is dropped.
    An unchanged question keeps its row and id (score and priority refreshed); open questions no longer proposed
    become ``stale``. Running it twice with the same list changes no question the second time (only the time each
    was last confirmed, ``updated_at``)."""
    s = session
    wanted = [_canonical(x) for x in suggestions]
    now = utcnow()

    face_ids = {f for x in wanted for f in (*x.face_ids, *x.other_face_ids)}
    human_or_gone: set[str] = set(face_ids)
    present: set[str] = set()  # faces still in the library (a photo may have gone since the run read it)
    for chunk in _chunks(sorted(face_ids | {x.evidence_face_id for x in wanted if x.evidence_face_id})):
        for fid, src in s.execute(select(FaceInstance.face_id, FaceInstance.assignment_source).where(FaceInstance.face_id.in_(chunk))):
            present.add(fid)
            if src not in HUMAN_SOURCES:
                human_or_gone.discard(fid)
    person_ids = sorted({p for x in wanted for p in (x.person_id, x.other_person_id) if p})
    active = set()
    for chunk in _chunks(person_ids):
        active.update(s.scalars(select(Person.person_id).where(Person.person_id.in_(chunk), Person.status == PERSON_ACTIVE)))

    # Faces known not to be a person: explicit rejections, and faces of rejected questions about that person.
    not_person: dict[str, set[str]] = defaultdict(set)
    for chunk in _chunks(person_ids):
        for fid, pid in s.execute(select(FaceRejection.face_id, FaceRejection.person_id).where(FaceRejection.person_id.in_(chunk))):
            not_person[pid].add(fid)
    rejected = list(s.execute(
        select(SuggestionRecord.id, SuggestionRecord.kind, SuggestionRecord.person_id, SuggestionRecord.other_person_id,
               SuggestionRecord.faces, SuggestionRecord.other_faces)
        .where(SuggestionRecord.status == SUGGESTION_REJECTED)
    ))
    rejected_faces: dict[int, tuple[set[str], set[str]]] = {r.id: (set(), set()) for r in rejected}
    for chunk in _chunks(list(rejected_faces)):
        for sid, fid, side in s.execute(select(SuggestionFace.suggestion_id, SuggestionFace.face_id, SuggestionFace.side)
                                        .where(SuggestionFace.suggestion_id.in_(chunk))):
            rejected_faces[sid][side].add(fid)
    merged = _merged_into(s)
    rejected_person_pairs: set[tuple[str, str]] = set()
    rejected_groups: list[tuple[set[str], set[str]]] = []
    for r in rejected:
        if r.person_id and r.other_person_id:
            rejected_person_pairs.add(_pair(_resolve(r.person_id, merged), _resolve(r.other_person_id, merged)))
        elif r.person_id:  # "not P" holds for whoever P was merged into (one identity)
            not_person[_resolve(r.person_id, merged)].update(rejected_faces[r.id][0])
        else:
            rejected_groups.append(rejected_faces[r.id])
    answered_pairs: set[tuple[str, str]] = set()
    group_faces = sorted({f for x in wanted if _shape(x) == SHAPE_GROUPS for f in (*x.face_ids, *x.other_face_ids)})
    for chunk in _chunks(group_faces):
        answered_pairs.update((a, b) for a, b in s.execute(select(FacePairConstraint.face_id_a, FacePairConstraint.face_id_b)
                                                           .where(FacePairConstraint.face_id_a.in_(chunk))))
    answered_faces = {f for pair in answered_pairs for f in pair}  # only these can make a group pair answered
    answered_fps = set(s.scalars(select(SuggestionRecord.fingerprint).where(
        SuggestionRecord.status.in_((SUGGESTION_ACCEPTED, SUGGESTION_REJECTED)))))

    # A merge of two people settles the faces of the smaller one: that is its weight in the queue.
    person_faces: dict[str, int] = {}
    pair_people = sorted({p for x in wanted if _shape(x) == SHAPE_PERSONS for p in (x.person_id, x.other_person_id)})
    for chunk in _chunks(pair_people):
        person_faces.update((pid, n) for pid, n in s.execute(select(FaceInstance.person_id, func.count())
                                                            .where(FaceInstance.person_id.in_(chunk)).group_by(FaceInstance.person_id)))

    kept: dict[str, Suggestion] = {}
    priority: dict[str, float] = {}
    for x in wanted:
        shape = _shape(x)
        if any(p not in active for p in (x.person_id, x.other_person_id) if p):
            continue
        a = tuple(f for f in x.face_ids if f not in human_or_gone)
        b = tuple(f for f in x.other_face_ids if f not in human_or_gone)
        if shape == SHAPE_TO_PERSON:
            a = tuple(f for f in a if f not in not_person.get(x.person_id, ()))
            if not a:
                continue
        elif shape == SHAPE_PERSONS:
            p, q = _resolve(x.person_id, merged), _resolve(x.other_person_id, merged)
            if p == q or _pair(p, q) in rejected_person_pairs:
                continue
        else:
            if not a or not b:
                continue
            sa, sb = set(a), set(b)
            if (sa & answered_faces and sb & answered_faces) and any(_pair(f, g) in answered_pairs for f in sa & answered_faces
                                                                    for g in sb & answered_faces):
                continue
            if any((sa & ra and sb & rb) or (sa & rb and sb & ra) for ra, rb in rejected_groups):
                continue
        y = replace(x, face_ids=a, other_face_ids=b)
        if shape == SHAPE_GROUPS and b[0] < a[0]:  # filtering may change which group sorts first
            y = replace(y, face_ids=b, other_face_ids=a, cluster_id=x.other_cluster_id, other_cluster_id=x.cluster_id)
        fp = _fingerprint(y)
        if fp in answered_fps:
            continue
        weight = y.priority
        if shape == SHAPE_PERSONS:
            weight = min(person_faces.get(y.person_id, 0), person_faces.get(y.other_person_id, 0)) * y.closeness
        if fp not in kept or weight > priority[fp]:
            kept[fp], priority[fp] = y, weight

    existing: dict[str, SuggestionRecord] = {}
    for row in s.scalars(select(SuggestionRecord).where(SuggestionRecord.status == SUGGESTION_OPEN,
                                                        SuggestionRecord.source == PIPELINE_ACTOR).order_by(SuggestionRecord.id)):
        if row.fingerprint in kept and row.fingerprint not in existing:
            existing[row.fingerprint] = row
        else:  # no longer asked (or a duplicate): superseded
            row.status, row.answered_at, row.actor = SUGGESTION_STALE, now, PIPELINE_ACTOR
    new: list[tuple[dict, Suggestion]] = []
    confirmed: list[int] = []
    for fp, y in kept.items():
        row = existing.get(fp)
        values = dict(score=float(y.score), bar=float(y.bar), priority=float(priority[fp]), cluster_id=y.cluster_id,
                      other_cluster_id=y.other_cluster_id,
                      evidence_face_id=y.evidence_face_id if y.evidence_face_id in present else None)
        if row is not None:
            for k, v in values.items():
                if getattr(row, k) != v:
                    setattr(row, k, v)
            confirmed.append(row.id)
            continue
        new.append((dict(kind=y.kind, status=SUGGESTION_OPEN, fingerprint=fp, source=PIPELINE_ACTOR, person_id=y.person_id,
                         other_person_id=y.other_person_id, faces=len(y.face_ids), other_faces=len(y.other_face_ids),
                         created_at=now, updated_at=now, **values), y))
    s.flush()  # the stale marks above, before the Core statements below
    # Core INSERT … RETURNING in batches, ids in parameter order (a first organise of a large library asks tens of
    # thousands of questions; ORM objects for them cost more than the naming that found them).
    table = SuggestionRecord.__table__
    ids: list[int] = []
    for chunk in _chunks([row for row, _ in new], 5000):
        ids += [r[0] for r in s.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), chunk)]
    for chunk in _chunks(confirmed, 5000):  # one statement, not an UPDATE per unchanged question
        s.execute(update(SuggestionRecord).where(SuggestionRecord.id.in_(chunk)).values(updated_at=now)
                  .execution_options(synchronize_session=False))
    face_rows = [dict(suggestion_id=sid, face_id=f, side=side) for sid, (_, y) in zip(ids, new)
                 for side, fids in ((0, y.face_ids), (1, y.other_face_ids)) for f in fids]
    for chunk in _chunks(face_rows, 5000):  # Core insert: a large library's first organise writes ~10 rows per face
        s.execute(insert(SuggestionFace.__table__), chunk)
    # Superseded questions are kept a week (a page showing one says "stale", not "not found"), then forgotten.
    old = list(s.scalars(select(SuggestionRecord.id).where(SuggestionRecord.status == SUGGESTION_STALE,
                                                             SuggestionRecord.answered_at < now - STALE_KEPT)))
    for chunk in _chunks(old):
        s.query(SuggestionFace).filter(SuggestionFace.suggestion_id.in_(chunk)).delete(synchronize_session=False)
        s.query(SuggestionRecord).filter(SuggestionRecord.id.in_(chunk)).delete(synchronize_session=False)
    s.flush()
    return len(kept)


def must_link_pairs(session: Session) -> list[tuple[str, str]]:
    """Face pairs a person said are the same person (``face_id_a < face_id_b``), for the clustering."""
    return [tuple(r) for r in session.execute(select(FacePairConstraint.face_id_a, FacePairConstraint.face_id_b)
                                              .where(FacePairConstraint.same.is_(True))
                                              .order_by(FacePairConstraint.face_id_a, FacePairConstraint.face_id_b))]


def cannot_link_pairs(session: Session) -> list[tuple[str, str]]:
    """Face pairs a person said are different people (``face_id_a < face_id_b``), for the clustering."""
    return [tuple(r) for r in session.execute(select(FacePairConstraint.face_id_a, FacePairConstraint.face_id_b)
                                              .where(FacePairConstraint.same.is_(False))
                                              .order_by(FacePairConstraint.face_id_a, FacePairConstraint.face_id_b))]


def cannot_link_persons(session: Session) -> list[tuple[str, str]]:
    """Pairs of people a person said are different (rejected "the same person?" questions), as current person ids
    (through merges), so automation neither proposes nor performs their merge."""
    merged = _merged_into(session)
    out = set()
    for p, q in session.execute(select(SuggestionRecord.person_id, SuggestionRecord.other_person_id).where(
            SuggestionRecord.status == SUGGESTION_REJECTED, SuggestionRecord.person_id.is_not(None),
            SuggestionRecord.other_person_id.is_not(None))):
        p, q = _resolve(p, merged), _resolve(q, merged)
        if p != q:
            out.add(_pair(p, q))
    return sorted(out)


# --------------------------------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------------------------------


def _undecided_face():
    """SQL: a face of the current suggestion row that an answer would still decide (not human-labelled and not
    rejected for the suggestion's candidate person)."""
    return and_(
        or_(FaceInstance.assignment_source.is_(None), FaceInstance.assignment_source.not_in(HUMAN_SOURCES)),
        not_(exists().where(FaceRejection.face_id == FaceInstance.face_id, FaceRejection.person_id == SuggestionRecord.person_id)
             .correlate_except(FaceRejection)),  # two levels down: correlate explicitly
    )


def _live():
    """SQL: an open row that can still be answered: its people are active and each side still has an undecided
    face. Computed when read, so a person deleted or faces labelled since organise ran never show as open."""
    def person_ok(col):
        return or_(col.is_(None), exists().where(Person.person_id == col, Person.status == PERSON_ACTIVE))

    def side_ok(side: int, count_col):
        return or_(count_col == 0, exists(
            select(SuggestionFace.face_id).join(FaceInstance, FaceInstance.face_id == SuggestionFace.face_id)
            .where(SuggestionFace.suggestion_id == SuggestionRecord.id, SuggestionFace.side == side, _undecided_face())
        ))

    return and_(SuggestionRecord.status == SUGGESTION_OPEN, person_ok(SuggestionRecord.person_id),
                person_ok(SuggestionRecord.other_person_id), side_ok(0, SuggestionRecord.faces), side_ok(1, SuggestionRecord.other_faces))


def _status_filter(status: str | None):
    status = status or "all"
    if status not in LIST_STATUSES:
        raise InvalidInput(f"unknown suggestion status {status!r} (one of {', '.join(LIST_STATUSES)})")
    if status == "all":
        return None
    if status == SUGGESTION_OPEN:
        return _live()
    if status == SUGGESTION_STALE:
        return or_(SuggestionRecord.status == SUGGESTION_STALE, and_(SuggestionRecord.status == SUGGESTION_OPEN, not_(_live())))
    return SuggestionRecord.status == status


def _query(kind: str | None, status: str | None):
    q = select(SuggestionRecord)
    cond = _status_filter(status)
    if cond is not None:
        q = q.where(cond)
    if kind is not None:
        if kind not in SUGGESTION_KINDS:
            raise InvalidInput(f"unknown suggestion kind {kind!r} (one of {', '.join(SUGGESTION_KINDS)})")
        q = q.where(SuggestionRecord.kind == kind)
    return q


def count_suggestions(settings: Settings, kind: str | None = None, status: str | None = "open") -> int:
    """How many suggestions :func:`list_suggestions` would page through."""
    with session_scope(settings.sql_url) as s:
        return int(s.scalar(select(func.count()).select_from(_query(kind, status).subquery())) or 0)


def list_suggestions(settings: Settings, kind: str | None = None, status: str | None = "open", limit: int = 50,
                     offset: int = 0) -> list[SuggestionInfo]:
    """Suggestions: questions about names already given first (:data:`CHECKS_FIRST`), then the ones whose answer
    settles most (priority: faces settled × closeness to the bar); among equals the stronger evidence first (many
    questions reach closeness 1: every step of a chain, every group at the bar), and among names given to check the
    weaker evidence first (every one at or under the bar reaches closeness 1: the most doubtful first).

    ``status``: ``open`` (default: answerable now), ``accepted``, ``rejected``, ``stale`` or ``all``; ``kind``: one
    of :data:`SUGGESTION_KINDS` or ``None`` for every kind. Each carries its faces (a strip of the best
    :data:`LIST_FACES_PER_SIDE` per side, with photo paths), its people (name, cover face) and cluster ids."""
    if limit < 0 or offset < 0:
        raise InvalidInput("limit and offset must not be negative")
    with session_scope(settings.sql_url) as s:
        checks = SuggestionRecord.kind.in_(CHECKS_FIRST)
        stronger = case((checks, SuggestionRecord.score), else_=-SuggestionRecord.score)  # a name given: the weaker first
        q = _query(kind, status).order_by(checks.desc(), SuggestionRecord.priority.desc(), stronger.asc(),
                                          SuggestionRecord.id).limit(limit).offset(offset)
        rows = list(s.scalars(q))
        return _infos(s, rows, LIST_FACES_PER_SIDE)


def get_suggestion(settings: Settings, suggestion_id: int) -> SuggestionInfo:
    """One suggestion with all its faces; :class:`NotFound` for an unknown id."""
    with session_scope(settings.sql_url) as s:
        row = _row(s, suggestion_id)
        return _infos(s, [row], None)[0]


def _row(s: Session, suggestion_id) -> SuggestionRecord:
    try:
        sid = int(suggestion_id)
    except (TypeError, ValueError):
        raise InvalidInput(f"a suggestion id is a number, not {suggestion_id!r}") from None
    row = s.get(SuggestionRecord, sid)
    if row is None:
        raise NotFound(f"no suggestion with id {sid}")
    return row


def _infos(s: Session, rows: list[SuggestionRecord], per_side: int | None) -> list[SuggestionInfo]:
    if not rows:
        return []
    ids = [r.id for r in rows]
    live = set(s.scalars(select(SuggestionRecord.id).where(SuggestionRecord.id.in_(ids), _live())))
    members: dict[int, list[tuple[int, object]]] = defaultdict(list)
    F = FaceInstance  # columns only: whole rows would decode every face's landmarks, a third of a page's time
    columns = (F.face_id, F.image_id, F.x1, F.y1, F.x2, F.y2, F.quality_score, F.person_id, F.assignment_source)
    for r in s.execute(select(SuggestionFace.suggestion_id, SuggestionFace.side, *columns)
                       .join(F, F.face_id == SuggestionFace.face_id).where(SuggestionFace.suggestion_id.in_(ids))):
        members[r.suggestion_id].append((r.side, r))
    evidence = {}
    for chunk in _chunks(sorted({r.evidence_face_id for r in rows if r.evidence_face_id})):
        evidence.update((f.face_id, f) for f in s.execute(select(*columns).where(F.face_id.in_(chunk))))
    all_faces = sorted({f.face_id for m in members.values() for _, f in m})
    rejected: set[tuple[str, str]] = set()
    for chunk in _chunks(all_faces):
        rejected.update((fid, pid) for fid, pid in s.execute(select(FaceRejection.face_id, FaceRejection.person_id)
                                                             .where(FaceRejection.face_id.in_(chunk))))
    images = sorted({f.image_id for m in members.values() for _, f in m} | {f.image_id for f in evidence.values()})
    paths: dict[str, str] = {}
    for chunk in _chunks(images):
        for image_id, path in s.execute(select(Photo.image_id, Photo.path).where(Photo.image_id.in_(chunk), Photo.status == PHOTO_OK)
                                        .order_by(Photo.id)):
            paths.setdefault(image_id, path)
    people = _people(s, {p for r in rows for p in (r.person_id, r.other_person_id) if p})

    def info(f, settled: bool) -> SuggestionFaceInfo:
        return SuggestionFaceInfo(f.face_id, f.image_id, paths.get(f.image_id), (f.x1, f.y1, f.x2, f.y2), f.quality_score,
                                  f.person_id, f.assignment_source, settled)

    out = []
    for r in rows:
        sides: tuple[list[SuggestionFaceInfo], list[SuggestionFaceInfo]] = ([], [])
        for side, f in members.get(r.id, []):
            sides[side].append(info(f, f.assignment_source in HUMAN_SOURCES or (f.face_id, r.person_id) in rejected))
        for lst in sides:
            lst.sort(key=lambda x: (x.settled, -(x.quality_score if x.quality_score is not None else -1.0), x.face_id))
        status = r.status if r.status != SUGGESTION_OPEN or r.id in live else SUGGESTION_STALE
        e = evidence.get(r.evidence_face_id) if r.evidence_face_id else None
        shown = info(e, True) if e is not None and r.person_id and e.person_id == r.person_id else None  # while still theirs
        out.append(SuggestionInfo(
            id=r.id, kind=r.kind, status=status, score=r.score, bar=r.bar, priority=r.priority,
            settles=(sum(not x.settled for lst in sides for x in lst) if r.faces or r.other_faces
                     else min(people[r.person_id].faces, people[r.other_person_id].faces) if r.person_id and r.other_person_id else 0),
            person=people.get(r.person_id) if r.person_id else None,
            other_person=people.get(r.other_person_id) if r.other_person_id else None,
            cluster_id=r.cluster_id, other_cluster_id=r.other_cluster_id,
            faces=sides[0][:per_side] if per_side else sides[0], other_faces=sides[1][:per_side] if per_side else sides[1],
            face_count=len(sides[0]), other_face_count=len(sides[1]), created_at=r.created_at, updated_at=r.updated_at,
            answered_at=r.answered_at, actor=r.actor, answer=r.answer, evidence_face=shown,
        ))
    return out


def _people(s: Session, person_ids: Iterable[str], samples: int = 6) -> dict[str, SuggestedPerson]:
    ids = sorted(set(person_ids))
    out = {pid: SuggestedPerson(pid, None, None, 0, None) for pid in ids}
    faces: dict[str, list[tuple]] = defaultdict(list)
    for chunk in _chunks(ids):
        for p in s.scalars(select(Person).where(Person.person_id.in_(chunk))):
            out[p.person_id].name, out[p.person_id].status = p.name, p.status
        for fid, pid, src, q, det in s.execute(select(FaceInstance.face_id, FaceInstance.person_id, FaceInstance.assignment_source,
                                                      FaceInstance.quality_score, FaceInstance.det_score)
                                               .where(FaceInstance.person_id.in_(chunk))):
            faces[pid].append((src in HUMAN_SOURCES, q if q is not None else -1.0, det or 0.0, fid))
    for pid, lst in faces.items():
        lst.sort(key=lambda t: (not t[0], -t[1], -t[2], t[3]))
        out[pid].faces = len(lst)
        out[pid].cover_face_id = lst[0][3]
        out[pid].sample_face_ids = [t[3] for t in lst[:samples]]
    return out


# --------------------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What answering one open suggestion will touch, read in one transaction before any label operation."""

    id: int
    kind: str
    shape: str
    person_id: str | None
    other_person_id: str | None
    cluster_id: str | None
    other_cluster_id: str | None
    faces: list[str]  # undecided faces of side 0, best first
    other_faces: list[str]  # undecided faces of side 1, best first


def _plan(settings: Settings, suggestion_id) -> _Plan:
    """The open suggestion's plan; :class:`NotFound` / :class:`Conflict` otherwise. An open row that is no longer
    answerable (see :func:`_live`) is marked ``stale`` (committed) before the conflict is raised."""
    stale = False
    with session_scope(settings.sql_url) as s:
        row = _row(s, suggestion_id)
        if row.status != SUGGESTION_OPEN:
            raise Conflict(f"suggestion {row.id} is already {row.status}"
                           + (f" (by {row.actor})" if row.actor and row.status != SUGGESTION_STALE else ""))
        if s.scalar(select(SuggestionRecord.id).where(SuggestionRecord.id == row.id, _live())) is None:
            row.status, row.answered_at, row.actor = SUGGESTION_STALE, utcnow(), PIPELINE_ACTOR
            stale = True
        else:
            info = _infos(s, [row], None)[0]
            plan = _Plan(row.id, row.kind, _shape_of_row(row), row.person_id, row.other_person_id, row.cluster_id,
                         row.other_cluster_id, [f.face_id for f in info.faces if not f.settled],
                         [f.face_id for f in info.other_faces if not f.settled])
    if stale:
        raise Conflict(f"suggestion {suggestion_id} is stale: its people or faces changed since it was made")
    return plan


def _shape_of_row(row: SuggestionRecord) -> str:
    if row.person_id and row.other_person_id:
        return SHAPE_PERSONS
    if row.person_id:
        return SHAPE_TO_PERSON
    return SHAPE_GROUPS


@contextmanager
def _one_vector_client(settings: Settings, syncs: int) -> Iterator[None]:
    """Hold the vector store open while label operations that each push a payload run (``syncs`` of them), so
    they share one client (the client is shared within the process) instead of opening the store once per face.
    Not opened for one push or none: opening a large local store costs more than the label itself. Busy or down:
    the operations run anyway and leave their faces dirty, as they always do."""
    from face_pipeline.core.vectors import open_vector_client

    with ExitStack() as stack:
        try:
            if syncs > 1:
                stack.enter_context(open_vector_client(settings))
        except Exception as exc:  # VectorStoreBusy, a server down: the label operations handle it themselves
            log.info("vector store not held for this answer: %s", exc)
        yield


def _combined(action: str, results: Sequence[LabelResult], person_id: str | None = None, name: str | None = None) -> LabelResult:
    from face_pipeline.core.labels import LabelResult

    res = LabelResult(action, person_id=person_id, name=name)
    synced: int | None = 0
    for r in results:
        for k in ("changed", "unchanged", "skipped", "rejected", "conflicts", "unassigned"):
            getattr(res, k).extend(getattr(r, k))
        res.events += r.events
        res.created = res.created or r.created
        synced = None if synced is None or r.synced is None else synced + r.synced
        res.person_id = res.person_id or r.person_id
        res.name = res.name or r.name
    res.synced = synced
    for k in ("changed", "unchanged", "skipped", "rejected", "conflicts", "unassigned"):
        setattr(res, k, sorted(dict.fromkeys(getattr(res, k))))
    return res


def _label_group(settings: Settings, face_ids: list[str], cluster_id: str | None, person_ref: str, actor: str, reason: str) -> LabelResult:
    """Give a group of faces a person through the label operations.

    When the group is exactly the undecided part of its cluster (the usual case: organise asked about the cluster
    it just made) this is :func:`labels.label_cluster`, one transaction with its rules (one face per photo, human
    labels and rejections left alone). Otherwise the cluster has changed since, and only the faces the person saw
    are labelled, one :func:`labels.label_face` each, after the same photo rule: one face per photo, none where
    the person already has a human-labelled face there."""
    from face_pipeline.core import labels

    if cluster_id:
        with session_scope(settings.sql_url) as s:
            current = set(s.scalars(select(FaceInstance.face_id).where(
                FaceInstance.cluster_id == cluster_id,
                or_(FaceInstance.assignment_source.is_(None), FaceInstance.assignment_source.not_in(HUMAN_SOURCES)))))
        if current == set(face_ids):
            return labels.label_cluster(settings, cluster_id, person_ref, actor=actor, reason=reason, merge=True)
    with session_scope(settings.sql_url) as s:
        faces = [f for chunk in _chunks(face_ids) for f in s.scalars(select(FaceInstance).where(FaceInstance.face_id.in_(chunk)))]
        try:
            person = labels.resolve_person(s, person_ref)
        except (NotFound, InvalidInput):  # a new name: nobody holds it yet
            person = None
        held = set()
        if person is not None:
            images = sorted({f.image_id for f in faces})
            for chunk in _chunks(images):
                held.update(s.scalars(select(FaceInstance.image_id).where(
                    FaceInstance.person_id == person.person_id, FaceInstance.image_id.in_(chunk),
                    FaceInstance.assignment_source.in_(HUMAN_SOURCES))))
    by_image: dict[str, list[FaceInstance]] = defaultdict(list)
    for f in faces:
        by_image[f.image_id].append(f)
    chosen, conflicts = [], []
    for image_id, group in by_image.items():
        group.sort(key=lambda f: (-(f.quality_score if f.quality_score is not None else -1.0), -(f.det_score or 0.0), f.face_id))
        if image_id in held:
            conflicts.extend(f.face_id for f in group)
        else:
            chosen.append(group[0].face_id)
            conflicts.extend(f.face_id for f in group[1:])
    results = []
    with _one_vector_client(settings, len(chosen)):
        for fid in sorted(chosen):
            r = labels.label_face(settings, fid, person_ref, actor=actor, reason=reason)
            person_ref = r.person_id or person_ref  # a new name is created once, then referred to by id
            results.append(r)
    res = _combined("label_faces", results)
    res.conflicts = sorted(set(res.conflicts) | set(conflicts))
    return res


def _record(settings: Settings, plan: _Plan, status: str, actor: str, answer: dict, *, to_person: str | None = None,
            from_person: str | None = None, pairs: Sequence[tuple[str, str]] = (), same: bool | None = None) -> int:
    """Close the suggestion, store the face pair constraints of the answer and log the answer's event, in one
    transaction. Returns events written. A concurrent answer wins and this one is a conflict; an organise run that
    superseded the question meanwhile (``stale``) does not: the person's answer is recorded all the same."""
    now = utcnow()
    with session_scope(settings.sql_url) as s:
        done = s.execute(update(SuggestionRecord)
                         .where(SuggestionRecord.id == plan.id, SuggestionRecord.status.in_((SUGGESTION_OPEN, SUGGESTION_STALE)))
                         .values(status=status, answered_at=now, actor=actor, answer=answer)
                         .execution_options(synchronize_session=False)).rowcount
        if not done:
            raise Conflict(f"suggestion {plan.id} was answered meanwhile")
        if pairs:
            faces = sorted({f for p in pairs for f in p})
            existing: dict[tuple[str, str], FacePairConstraint] = {}
            for chunk in _chunks(faces):
                for c in s.scalars(select(FacePairConstraint).where(FacePairConstraint.face_id_a.in_(chunk))):
                    existing[(c.face_id_a, c.face_id_b)] = c
            for a, b in sorted(set(pairs)):
                c = existing.get((a, b))
                if c is None:
                    s.add(FacePairConstraint(face_id_a=a, face_id_b=b, same=same, actor=actor, suggestion_id=plan.id, created_at=now))
                elif c.same != same or c.suggestion_id != plan.id:  # the latest answer about a pair is the fact
                    c.same, c.actor, c.suggestion_id, c.created_at = same, actor, plan.id, now
        single = plan.faces[0] if plan.kind == "face_is_person" and plan.faces else None
        s.add(FaceAssignmentEvent(actor=actor, action=f"{'accept' if status == SUGGESTION_ACCEPTED else 'reject'}_suggestion",
                                  face_id=single, from_person=from_person, to_person=to_person, cluster_id=plan.cluster_id,
                                  reason=f"suggestion {plan.id}", details={"suggestion_id": plan.id, "kind": plan.kind, **answer}))
    return 1


def _cross_pairs(a: Sequence[str], b: Sequence[str], limit: int) -> list[tuple[str, str]]:
    return [_pair(x, y) for x in a[:limit] for y in b[:limit]]


def _spanning_pairs(a: Sequence[str], b: Sequence[str]) -> list[tuple[str, str]]:
    """Must-links that join every face of both groups into one (must-link is transitive): the first face of each
    group linked to every face of the other."""
    return sorted({_pair(a[0], y) for y in b} | {_pair(b[0], x) for x in a})


def accept_suggestion(settings: Settings, suggestion_id: int, *, actor: str = "user", name: str | None = None) -> LabelResult:
    """Answer yes, through the label operations (every change an event with ``actor``):

    - faces or a cluster → person: those faces become the person (human labels: ``label_face`` for one face,
      ``label_cluster``'s rules for a group);
    - two people: ``merge_persons`` — into the one with more faces, or into the one ``name`` names;
    - two unnamed groups: a must-link ("same person") between them that clustering honours, and with ``name``
      both groups are labelled as that person (created when new).

    :class:`NotFound` for an unknown id, :class:`Conflict` for an answered or stale one, :class:`InvalidInput`
    for a ``name`` the suggestion cannot take."""
    from face_pipeline.core import labels

    actor = actor or "user"
    plan = _plan(settings, suggestion_id)
    reason = f"suggestion {plan.id}"
    answer: dict = {"answer": "yes"}
    if plan.shape == SHAPE_TO_PERSON:
        if name is not None:
            raise InvalidInput(f"suggestion {plan.id} already names its person; a name is only given when two unnamed "
                               "groups are the same person, or to choose which of two people a merge keeps")
        if plan.kind == "face_is_person" and len(plan.faces) == 1:
            res = labels.label_face(settings, plan.faces[0], plan.person_id, actor=actor, reason=reason)
        else:
            res = _label_group(settings, plan.faces, plan.cluster_id, plan.person_id, actor, reason)
        answer.update(faces=len(res.changed))
        res = _combined("accept_suggestion", [res], plan.person_id)
        res.events += _record(settings, plan, SUGGESTION_ACCEPTED, actor, answer, to_person=plan.person_id)
        return res
    if plan.shape == SHAPE_PERSONS:
        with session_scope(settings.sql_url) as s:
            counts = dict(s.execute(select(FaceInstance.person_id, func.count()).where(
                FaceInstance.person_id.in_((plan.person_id, plan.other_person_id))).group_by(FaceInstance.person_id)).all())
            if name is not None:
                chosen = labels.resolve_person(s, name).person_id
                if chosen not in (plan.person_id, plan.other_person_id):
                    raise InvalidInput(f"{name!r} is neither of the two people of suggestion {plan.id}")
                target = chosen
            else:
                target = max((plan.person_id, plan.other_person_id), key=lambda p: (counts.get(p, 0), p == plan.person_id))
        source = plan.other_person_id if target == plan.person_id else plan.person_id
        res = labels.merge_persons(settings, [source], target, actor=actor, reason=reason)
        answer.update(merged=source, into=target)
        res = _combined("accept_suggestion", [res], target)
        res.events += _record(settings, plan, SUGGESTION_ACCEPTED, actor, answer, from_person=source, to_person=target)
        return res
    results = []
    person_id = None
    if name is not None:
        first = _label_group(settings, plan.faces, plan.cluster_id, name, actor, reason)
        if first.person_id is None:
            raise Conflict(f"none of suggestion {plan.id}'s faces could be labelled {name!r}: "
                           f"{len(first.conflicts)} same-photo conflicts, {len(first.skipped) + len(first.rejected)} labelled or rejected")
        person_id = first.person_id
        second = _label_group(settings, plan.other_faces, plan.other_cluster_id, person_id, actor, reason)
        results = [first, second]
        answer.update(person=person_id, faces=len(first.changed) + len(second.changed))
    pairs = _spanning_pairs(plan.faces, plan.other_faces)
    answer.update(must_link=len(pairs))
    res = _combined("accept_suggestion", results, person_id)
    res.events += _record(settings, plan, SUGGESTION_ACCEPTED, actor, answer, to_person=person_id, pairs=pairs, same=True)
    return res


def reject_suggestion(settings: Settings, suggestion_id: int, *, actor: str = "user") -> LabelResult:
    """Answer no, so automation never proposes (or performs) it again:

    - faces or a cluster → person: "not this person" for each face (``reject_face``), which every later
      assignment respects;
    - two people: remembered (:func:`cannot_link_persons`), the merge is never suggested again;
    - two unnamed groups: cannot-link face pairs between them (up to :data:`PAIR_SIDE_LIMIT` faces a side, best
      first) that clustering honours.

    :class:`NotFound` for an unknown id, :class:`Conflict` for an answered or stale one."""
    from face_pipeline.core import labels

    actor = actor or "user"
    plan = _plan(settings, suggestion_id)
    reason = f"suggestion {plan.id}"
    answer: dict = {"answer": "no"}
    if plan.shape == SHAPE_TO_PERSON:
        with session_scope(settings.sql_url) as s:  # faces that have the person lose it: those payloads change
            holding = sum(1 for chunk in _chunks(plan.faces) for _ in s.scalars(select(FaceInstance.face_id).where(
                FaceInstance.face_id.in_(chunk), FaceInstance.person_id == plan.person_id)))
        with _one_vector_client(settings, holding):
            results = [labels.reject_face(settings, fid, plan.person_id, actor=actor, reason=reason) for fid in plan.faces]
        res = _combined("reject_suggestion", results, plan.person_id)
        answer.update(faces=len(plan.faces))
        res.events += _record(settings, plan, SUGGESTION_REJECTED, actor, answer, from_person=plan.person_id)
        return res
    if plan.shape == SHAPE_PERSONS:
        res = _combined("reject_suggestion", [])
        answer.update(persons=[plan.person_id, plan.other_person_id])
        res.events += _record(settings, plan, SUGGESTION_REJECTED, actor, answer, from_person=plan.person_id,
                              to_person=plan.other_person_id)
        res.synced = 0
        return res
    pairs = _cross_pairs(plan.faces, plan.other_faces, PAIR_SIDE_LIMIT)
    answer.update(cannot_link=len(pairs))
    res = _combined("reject_suggestion", [])
    res.changed = sorted(set(plan.faces[:PAIR_SIDE_LIMIT]) | set(plan.other_faces[:PAIR_SIDE_LIMIT]))
    res.events += _record(settings, plan, SUGGESTION_REJECTED, actor, answer, pairs=pairs, same=False)
    res.synced = 0
    return res
