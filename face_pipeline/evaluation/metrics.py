"""Clustering and assignment quality metrics, computed from label arrays alone.

Pure numpy so they can score our pipeline and every baseline the same way. Conventions:
``truth`` holds ground-truth identities; ``pred`` holds predicted cluster/person ids where ``None``/``-1``
-style "noise" must be expressed by the caller as a unique id per face (a noise face is its own cluster),
which is what BCubed expects.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Hashable, Sequence

import numpy as np


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float

    @staticmethod
    def of(p: float, r: float) -> "PRF":
        return PRF(float(p), float(r), float(2 * p * r / (p + r)) if (p + r) > 0 else 0.0)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _contingency(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> tuple[Counter, Counter, Counter]:
    if len(truth) != len(pred):
        raise ValueError("truth and pred differ in length")
    pairs = Counter(zip(truth, pred))
    return pairs, Counter(truth), Counter(pred)


def pairwise_prf(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> PRF:
    """Precision/recall over all unordered pairs of faces put together (pred) vs belonging together (truth)."""
    pairs, t_count, p_count = _contingency(truth, pred)
    c2 = lambda n: n * (n - 1) / 2  # noqa: E731
    tp = sum(c2(n) for n in pairs.values())
    pred_pairs = sum(c2(n) for n in p_count.values())
    true_pairs = sum(c2(n) for n in t_count.values())
    p = tp / pred_pairs if pred_pairs else 1.0
    r = tp / true_pairs if true_pairs else 1.0
    return PRF.of(p, r)


def bcubed_prf(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> PRF:
    """BCubed precision/recall (Amigó et al. 2009): per-face, averaged; robust to cluster-size skew."""
    pairs, t_count, p_count = _contingency(truth, pred)
    n = len(truth)
    if n == 0:
        return PRF.of(1.0, 1.0)
    p = sum(c * c / p_count[pc] for (_, pc), c in pairs.items()) / n
    r = sum(c * c / t_count[tc] for (tc, _), c in pairs.items()) / n
    return PRF.of(p, r)


def purity(truth: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    """Share of faces whose cluster's majority identity is their own."""
    pairs, _, p_count = _contingency(truth, pred)
    if not truth:
        return 1.0
    best: dict[Hashable, int] = {}
    for (_, pc), c in pairs.items():
        best[pc] = max(best.get(pc, 0), c)
    return sum(best.values()) / len(truth)


def noise_as_singletons(pred: Sequence[Hashable], noise: Hashable = -1) -> list[Hashable]:
    """Replace every noise label by a unique id, so a noise face counts as a singleton cluster."""
    return [("noise", i) if p == noise or p is None else p for i, p in enumerate(pred)]


@dataclass(frozen=True)
class AssignmentScore:
    """Known-person assignment: precision over assigned faces, recall over faces of known people."""

    precision: float
    recall: float
    assigned: int
    correct: int
    known_faces: int
    false_assignments_of_unknown: int
    unknown_faces: int

    @property
    def unknown_false_rate(self) -> float:
        return self.false_assignments_of_unknown / self.unknown_faces if self.unknown_faces else 0.0


def assignment_score(truth: Sequence[Hashable], assigned: Sequence[Hashable | None], known: set[Hashable]) -> AssignmentScore:
    """``assigned[i]`` is the identity the system gave face i (None = not assigned to a known person).

    Precision counts every assignment (including wrong ones of unknown people's faces); recall is over the
    faces whose true identity is among ``known``.
    """
    truth_a = np.asarray(truth, dtype=object)
    assigned_a = np.asarray(assigned, dtype=object)
    has = np.array([a is not None for a in assigned_a], dtype=bool)
    is_known = np.array([t in known for t in truth_a], dtype=bool)
    correct = int(sum(1 for t, a in zip(truth_a[has], assigned_a[has]) if t == a))
    n_assigned = int(has.sum())
    false_unknown = int((has & ~is_known).sum())
    correct_known = int(sum(1 for t, a, k in zip(truth_a, assigned_a, is_known) if k and a == t))
    return AssignmentScore(
        precision=correct / n_assigned if n_assigned else 1.0,
        recall=correct_known / int(is_known.sum()) if is_known.any() else 1.0,
        assigned=n_assigned,
        correct=correct,
        known_faces=int(is_known.sum()),
        false_assignments_of_unknown=false_unknown,
        unknown_faces=int((~is_known).sum()),
    )
