"""A user answering the review queue, simulated from the truth: what the product's questions are worth.

Where the evidence is suggestive but not enough, the product does not name: it asks (naming rules 3, 5 and 6;
:mod:`face_pipeline.core.suggestions`). The anchors have no such queue, so their quality is what their
automation gives; ours is what automation gives *plus* what a user settles by answering the first questions.
This module measures the second part: it answers the queue in the product's order (faces settled × closeness to
the bar, :attr:`Suggestion.priority`) from the truth, the way a careful user of the review page would, and re-runs
naming after each round so that later questions follow from earlier answers (organise does the same).

How the simulated user answers (only what the truth can say; background faces have no recorded identity, so the
user treats them as strangers):

* ``face_is_person`` — yes (a human label) when the face is that person, otherwise no ("not this person").
* ``cluster_is_person`` and ``check_names`` (a group automation named) — the faces that are that person get the
  label, the others "not this person". A group mixing people costs one answer plus one per face that had to be
  corrected (selecting the odd faces out on the page); a clean group costs one.
* ``same_person`` between two unnamed groups — when both groups are mostly one person, the user names them
  (the faces that are that person get a label of a new person; odd faces out cost one answer each); otherwise
  no: cannot-link pairs between the groups, as :func:`suggestions.reject_suggestion` stores them.
* ``same_person`` between two named people — always no in this protocol (names come from the truth).

The clustering of everyone is not re-run after answers (in the product a "no" between two groups also becomes a
cannot-link that clustering honours), so the figures are a lower bound on what the answers give.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace

from face_pipeline.evaluation.datasets import LabelledFaces
from face_pipeline.evaluation.protocol import Split

#: Questions answered between two organise runs (a user's sitting at the review page).
ROUND = 10
#: Cannot-link pairs stored per side for a "no" between two groups (as the product stores them).
PAIR_SIDE_LIMIT = 32


@dataclass
class Answered:
    """The labelling after the answers: ``split`` with the yes answers as human labels (people the user named
    while answering appended to ``split.people``), and what the no answers left behind."""

    split: Split
    rejected: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    cannot_link: list[tuple[int, int]] = field(default_factory=list)
    answers: int = 0  # clicks, corrections included
    questions: int = 0
    yes: int = 0
    faces_labelled: int = 0
    people_apart: set[tuple[int, int]] = field(default_factory=set)  # "not the same person" (the product remembers it)


def _identity(d: LabelledFaces, row: int) -> str | None:
    return str(d.identity[row]) if d.labelled[row] else None


def _queue(suggestions) -> list:
    """The product's queue order (:func:`suggestions.list_suggestions`): questions about names already given first,
    then by :attr:`Suggestion.priority` (faces settled × closeness to the bar), then by the stronger evidence (for a
    name given, the weaker: the most doubtful first)."""
    from face_pipeline.core.suggestions import CHECKS_FIRST, Suggestion

    def priority(s) -> float:
        rows = tuple(map(str, s.rows)) if s.rows else ()
        return Suggestion(s.kind, rows, other_face_ids=tuple(map(str, s.other_rows)), score=s.score, bar=s.bar, floor=s.floor).priority

    return sorted(suggestions, key=lambda s: (s.kind not in CHECKS_FIRST, -priority(s), s.score if s.kind in CHECKS_FIRST else -s.score))


def _label(a: Answered, rows, who: int) -> None:
    for r in rows:
        if a.split.human[r] < 0:
            a.split.human[r] = who
            a.faces_labelled += 1


def _answer(d: LabelledFaces, a: Answered, s) -> None:
    people = a.split.people
    a.questions += 1
    if s.kind == "face_is_person":
        (row,) = s.rows
        a.answers += 1
        if _identity(d, row) == people[s.person]:
            _label(a, [row], s.person)
            a.yes += 1
        else:
            a.rejected[row].add(s.person)
        return
    if s.kind in ("cluster_is_person", "check_names"):
        rows = list(s.rows)
        its = [r for r in rows if _identity(d, r) == people[s.person]]
        others = [r for r in rows if _identity(d, r) != people[s.person]]
        mostly = len(its) > len(others)
        a.answers += 1 + (min(len(its), len(others)) if its and others else 0)
        _label(a, its, s.person)
        for r in others:
            a.rejected[r].add(s.person)
        a.yes += int(mostly)
        return
    if not s.rows:  # two named people: the protocol's names are the truth, so never the same person
        a.answers += 1
        a.people_apart.add((min(s.person, s.other_person), max(s.person, s.other_person)))
        return
    ids = lambda rows: Counter(i for i in (_identity(d, r) for r in rows) if i is not None)  # noqa: E731
    left, right = ids(s.rows), ids(s.other_rows)
    top = left.most_common(1)[0][0] if left else None
    # "mostly one person": that person holds more than half of each group's faces (a group of many children with
    # 11 of one child's 268 faces is not a person, and a user says no to it)
    both = (top is not None and bool(right) and right.most_common(1)[0][0] == top
            and 2 * left[top] > len(s.rows) and 2 * right[top] > len(s.other_rows))
    a.answers += 1
    if not both:
        a.cannot_link += [(x, y) for x in s.rows[:PAIR_SIDE_LIMIT] for y in s.other_rows[:PAIR_SIDE_LIMIT]]
        return
    who = people.index(top) if top in people else None
    if who is None:
        people.append(top)
        who = len(people) - 1
    rows = list(s.rows) + list(s.other_rows)
    its = [r for r in rows if _identity(d, r) == top]
    a.answers += len(rows) - len(its)  # the odd faces out, deselected one by one
    _label(a, its, who)
    a.yes += 1


def answer_queue(d: LabelledFaces, split: Split, run, budget: int, per_round: int = ROUND):
    """Answer up to ``budget`` clicks of the review queue from the truth, ``per_round`` questions between two
    naming runs. ``run(split, rejected, cannot_link)`` is the product's naming (returns its ``Naming``); returns
    (the last ``Naming``, :class:`Answered`)."""
    a = Answered(replace(split, people=list(split.people), human=split.human.copy()))
    res = run(a.split, a.rejected, a.cannot_link)
    while a.answers < budget:
        queue = [s for s in _queue(res.suggestions)
                 if s.rows or (min(s.person, s.other_person), max(s.person, s.other_person)) not in a.people_apart]
        if not queue:
            break
        for s in queue[:per_round]:
            if a.answers >= budget:
                break
            _answer(d, a, s)
        res = run(a.split, a.rejected, a.cannot_link)
    return res, a
