"""The quality protocol: who is named, with how many labels, and how every method is scored on the same faces.

Protocol (issue 7): the people a user names are those with many photos, so from the people with at least
``MIN_PHOTOS_TO_NAME`` photos a seeded random ``fraction`` (½ and ⅒) is named, each with ``k`` labelled photos
(K = 1 and 3, the labelled face of the photo is its subject), for several seeds; plus the case nobody is named.
Every detected face is scored where its truth is defined: a photo's subject is the folder's person, any other
face in it a background stranger, an unknown person of their own.

Columns (:class:`Row`): known precision (named subject faces whose name is right) and recall (named people's
other subject photos that got their name); **unknown faces wrongly named** (subject faces of people nobody named
that got a name: count and rate); background faces named (count, reported apart: their identity is not
recorded, and in LFW a background face is mostly someone standing next to the subject — often a named person:
Halle Berry in Pierce_Brosnan_0009, Prince Charles in Camilla_Parker_Bowles_0001 — so a name there is usually
right and cannot be scored); BCubed P/R/F over all faces (background faces each their own person) and over the
unknown people's faces; pairwise F; noise rate (unnamed faces in no group); seconds.

Ours is the product's rules (:func:`run_ours`: :func:`cluster.cluster_faces` on everyone, then
:func:`naming.name_faces`); the anchors (:mod:`anchors`) are named the way their products do (a cluster holding
one person's labels takes the name). The clustering of everyone does not depend on labels, so it is computed
once per data set and only naming runs per split.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from face_pipeline.evaluation.datasets import LabelledFaces
from face_pipeline.evaluation.metrics import bcubed_prf, pairwise_prf

MIN_PHOTOS_TO_NAME = 5
FRACTIONS = (0.5, 0.1)
LABEL_BUDGETS = (1, 3)
SEEDS = (0, 1, 2)
FRONTIER = (0.35, 0.375, 0.40, 0.425, 0.45, 0.475, 0.50, 0.525, 0.55)


@dataclass
class Split:
    """One labelling: ``human`` (N,) person index per face (-1 = not labelled), ``people`` index → name."""

    seed: int
    k: int
    fraction: float
    people: list[str]
    human: np.ndarray

    @property
    def name(self) -> str:
        return "nobody named" if not self.people else f"K={self.k} named={self.fraction:g} seed={self.seed}"


def make_split(d: LabelledFaces, seed: int, k: int, fraction: float) -> Split:
    subjects = np.flatnonzero(d.labelled)
    ident = d.identity[subjects]
    names, counts = np.unique(ident, return_counts=True)
    eligible = sorted(names[counts >= MIN_PHOTOS_TO_NAME].tolist())
    rng = np.random.default_rng(seed)
    n_named = int(math.ceil(fraction * len(eligible))) if fraction > 0 else 0
    named = sorted(rng.choice(eligible, size=n_named, replace=False).tolist()) if n_named else []
    human = np.full(len(d), -1, np.int64)
    for p, name in enumerate(named):
        rows = subjects[ident == name]
        human[rng.choice(rows, size=min(k, len(rows)), replace=False)] = p
    return Split(seed, k, fraction, named, human)


def nobody(d: LabelledFaces) -> Split:
    return Split(0, 0, 0.0, [], np.full(len(d), -1, np.int64))


@dataclass
class Row:
    method: str
    split: str
    known_p: float
    known_r: float
    strangers_named: int
    unknown_faces: int
    background_named: int
    b3_p: float
    b3_r: float
    b3_f: float
    unk_b3_p: float
    unk_b3_r: float
    unk_b3_f: float
    pair_f: float
    noise: float
    seconds: float

    @property
    def stranger_rate(self) -> float:
        return self.strangers_named / max(1, self.unknown_faces)


def score(method: str, d: LabelledFaces, split: Split, person: np.ndarray, groups: np.ndarray, seconds: float) -> Row:
    """``person`` (N,) final person index per face (-1 = none; labelled faces included), ``groups`` (N,) the
    unknown group of each unnamed face (-1 = noise)."""
    truth = d.truth
    named = set(split.people)
    names = np.array(split.people + [None], dtype=object)
    given = names[np.where(person >= 0, person, len(split.people))]
    auto = (person >= 0) & (split.human < 0) & d.labelled  # truth is defined for subjects only
    known_face = np.array([t in named for t in truth])
    correct = auto & (given == truth)
    known_p = float(correct.sum() / auto.sum()) if auto.any() else 1.0
    want = known_face & (split.human < 0)
    known_r = float((correct & want).sum() / want.sum()) if want.any() else 1.0
    strangers = auto & ~known_face
    background = (person >= 0) & ~d.labelled
    pred = np.empty(len(d), dtype=object)
    for i in range(len(d)):
        pred[i] = ("p", given[i]) if person[i] >= 0 else ("c", int(groups[i])) if groups[i] >= 0 else ("n", i)
    b3 = bcubed_prf(truth.tolist(), pred.tolist())
    unk = ~known_face
    ub3 = bcubed_prf(truth[unk].tolist(), pred[unk].tolist())
    unnamed = person < 0
    return Row(
        method=method, split=split.name, known_p=known_p, known_r=known_r, strangers_named=int(strangers.sum()),
        unknown_faces=int((unk & d.labelled).sum()), background_named=int(background.sum()), b3_p=b3.precision, b3_r=b3.recall, b3_f=b3.f1, unk_b3_p=ub3.precision,
        unk_b3_r=ub3.recall, unk_b3_f=ub3.f1, pair_f=pairwise_prf(truth.tolist(), pred.tolist()).f1,
        noise=float((unnamed & (groups < 0)).sum() / max(1, unnamed.sum())), seconds=seconds,
    )


# ------------------------------------------------------------------------------------------------------ ours ----
@dataclass
class OursConfig:
    """The product's settings that matter here (defaults = ``Settings`` defaults)."""

    method: str | None = None
    threshold: float | None = None  # link similarity; None = Settings().unknown_threshold
    direct: float | None = None  # None = Settings().person_match_threshold
    impostor: float | None = None  # None = the model's recorded bar
    min_quality: float | None = None
    group_names: bool = True
    fine_link_quality: float | None = None  # None = the model's recorded one
    tell_apart: float | None = None  # None = the model's recorded one


def _defaults(cfg: OursConfig) -> OursConfig:
    from face_pipeline.core.naming import bars_for
    from face_pipeline.settings import Settings

    s = Settings(home="/nonexistent-unused")
    return OursConfig(
        method=cfg.method or s.unknown_method,
        threshold=s.unknown_threshold if cfg.threshold is None else cfg.threshold,
        direct=s.person_match_threshold if cfg.direct is None else cfg.direct,
        impostor=bars_for(s.model_name).impostor if cfg.impostor is None else cfg.impostor,
        min_quality=s.person_min_quality if cfg.min_quality is None else cfg.min_quality, group_names=cfg.group_names,
        fine_link_quality=bars_for(s.model_name).fine_link_quality if cfg.fine_link_quality is None else cfg.fine_link_quality,
        tell_apart=bars_for(s.model_name).tell_apart if cfg.tell_apart is None else cfg.tell_apart,
    )


def cluster_everyone(d: LabelledFaces, cfg: OursConfig | None = None, threshold: float | None = None) -> tuple[np.ndarray, float]:
    """The product's clustering of every face (``threshold`` overrides the link, e.g. ``naming.FINE_LINK``). As in
    organize, the clustering at the link places poor faces by their group (quality and the model's
    ``fine_link_quality``); the stricter one is links only."""
    from face_pipeline.core.cluster import cluster_faces

    cfg = _defaults(cfg or OursConfig())
    t0 = time.perf_counter()
    poor = {} if threshold is not None else {"quality": d.quality, "poor_below": cfg.fine_link_quality}
    labels = cluster_faces(d.X, cfg.method, threshold=threshold or cfg.threshold, min_size=2, groups=d.photo.tolist(), seed=0, **poor)
    return labels, time.perf_counter() - t0


def neighbours_of(d: LabelledFaces, cfg: OursConfig) -> tuple[np.ndarray, np.ndarray]:
    """The kNN graph the product's clustering reads (its method's k), computed once per library object: naming
    reads it for chain questions, and the review-queue simulation re-runs naming many times on one library."""
    from face_pipeline.core.cluster import REGISTRY
    from face_pipeline.core.clustering.neighbours import neighbour_graph
    from face_pipeline.core.naming import chain_graph_floor

    floor = chain_graph_floor(cfg.method, cfg.threshold, cfg.tell_apart)  # as organize asks for it
    key = (cfg.method, float(floor))
    cached = getattr(d, "_neighbours", None)
    if cached is None or cached[0] != key:
        cached = (key, neighbour_graph(d.X, REGISTRY[cfg.method].k, floor=floor))
        d._neighbours = cached  # type: ignore[attr-defined]
    return cached[1]


def run_ours(d: LabelledFaces, split: Split, clusters: np.ndarray, cfg: OursConfig | None = None, fine: np.ndarray | None = None,
             rejected: dict[int, set[int]] | None = None, cannot_link: list[tuple[int, int]] = ()):
    """(person, groups, seconds, naming) of the product's rules for ``split`` on precomputed ``clusters`` (and the
    stricter ``fine`` clustering at ``naming.FINE_LINK``, as organize uses). ``rejected`` and ``cannot_link`` are
    a user's "no" answers (:mod:`answers`)."""
    from face_pipeline.core.naming import name_faces, unknown_groups

    cfg = _defaults(cfg or OursConfig())
    t0 = time.perf_counter()
    graph = neighbours_of(d, cfg) if cfg.tell_apart > 0 else None  # chain questions need the model's measured lead
    res = name_faces(d.X, split.human, groups=d.photo.tolist(), quality=d.quality, clusters=clusters, direct=cfg.direct,
                     impostor=cfg.impostor, min_quality=cfg.min_quality, group_names=cfg.group_names,
                     fine_clusters=fine, fine_link_quality=cfg.fine_link_quality, tell_apart=cfg.tell_apart, rejected=rejected,
                     cannot_link=cannot_link, neighbours=graph)
    groups = unknown_groups(clusters, res.person, min_size=2)
    return res.person, groups, time.perf_counter() - t0, res


def run_anchor(d: LabelledFaces, split: Split, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from face_pipeline.evaluation.anchors import name_clusters

    from face_pipeline.core.naming import unknown_groups

    person = name_clusters(labels, split.human)
    return person, unknown_groups(labels, person, min_size=2)


# -------------------------------------------------------------------------------------------------- frontier ----
def centroid_best(d: LabelledFaces, split: Split) -> tuple[np.ndarray, np.ndarray]:
    """The simple per-face rule's choice: for every face, (the named person whose labels' centroid it is most
    similar to, that cosine)."""
    C = np.zeros((len(split.people), d.X.shape[1]), np.float64)
    np.add.at(C, split.human[split.human >= 0], d.X[split.human >= 0])
    C /= np.maximum(np.linalg.norm(C, axis=1, keepdims=True), 1e-12)
    S = d.X @ C.T.astype(np.float32)
    return S.argmax(axis=1), S.max(axis=1)


def centroid_frontier(d: LabelledFaces, split: Split, thresholds=FRONTIER) -> list[tuple[float, float, int, float]]:
    """The simple per-face rule: a face takes the named person whose labels' centroid it is most similar to,
    if that cosine is at least t. Returns (t, known recall, strangers named, stranger rate) per t."""
    if not split.people:
        return []
    best, best_s = centroid_best(d, split)
    truth = d.truth
    named = set(split.people)
    known_face = np.array([t in named for t in truth])
    free = split.human < 0
    names = np.array(split.people, dtype=object)
    out = []
    subject_unknown = ~known_face & d.labelled
    for t in thresholds:
        got = free & (best_s >= t)
        correct = got & (names[best] == truth)
        want = known_face & free
        out.append((t, float((correct & want).sum() / want.sum()), int((got & subject_unknown).sum()),
                    float((got & subject_unknown).sum() / subject_unknown.sum())))
    return out


def frontier_recall_at(frontier: list[tuple[float, float, int, float]], rate: float) -> float:
    """Best recall the centroid rule reaches without naming more strangers than ``rate`` (0 if none)."""
    ok = [r for _, r, _, s in frontier if s <= rate + 1e-12]
    return max(ok) if ok else 0.0


# ------------------------------------------------------------------------------------------------- impostors ----
def impostor_quantiles(d: LabelledFaces, qs=(0.99, 0.999, 0.9999)) -> tuple[dict[float, float], float, int]:
    """Quantiles and maximum of the cosine between subject faces filed under different names (all pairs)."""
    rows = np.flatnonzero(d.labelled)
    X = d.X[rows]
    _, code = np.unique(d.identity[rows], return_inverse=True)
    vals = []
    for lo in range(0, len(X), 1024):
        S = X[lo : lo + 1024] @ X.T
        i = np.arange(lo, min(lo + 1024, len(X)))[:, None]
        j = np.arange(len(X))[None, :]
        keep = (j > i) & (code[lo : lo + 1024, None] != code[None, :])
        vals.append(S[keep])
    v = np.concatenate(vals)
    return {q: float(np.quantile(v, q)) for q in qs}, float(v.max()), int(v.size)


def label_set_noise(d: LabelledFaces, k: int = 3, draws: int = 5, q: tuple[float, ...] = (0.5, 0.9, 0.95), seed: int = 0
                    ) -> tuple[dict[float, float], int]:
    """How far one face's scores against two sets of ``k`` human labels of its *own* person lie apart by chance:
    for every person with at least ``2k + 1`` subject photos, ``draws`` times, two disjoint random label sets and
    the |difference| of the product's scores (:func:`assign.person_scores`, hybrid prototypes) of their other
    photos. Returns the quantiles ``q`` and the number of scores: the measurement behind
    ``ModelBars.tell_apart``."""
    from face_pipeline.core import assign

    rows = np.flatnonzero(d.labelled)
    _, code, counts = np.unique(d.identity[rows], return_inverse=True, return_counts=True)
    rng = np.random.default_rng(seed)
    diffs = []
    for p in np.flatnonzero(counts >= 2 * k + 1):
        own = rows[code == p]
        for _ in range(draws):
            perm = rng.permutation(own)
            protos = assign.build_prototypes(d.X[perm[: 2 * k]], [0] * k + [1] * k)
            S = assign.person_scores(protos, d.X[perm[2 * k :]], "hybrid")
            diffs.append(np.abs(S[:, 0] - S[:, 1]))
    v = np.concatenate(diffs) if diffs else np.zeros(1)
    return {x: float(np.quantile(v, x)) for x in q}, int(v.size)


def fine_link_by_quality(d: LabelledFaces, link: float, min_photos: int = MIN_PHOTOS_TO_NAME, step: float = 0.1
                         ) -> list[tuple[float, int, float]]:
    """Per quality bin ``[lo, lo + step)``: (lo, faces, share of them whose best link to another subject face of the
    same person reaches ``link``), over the subject faces of people with at least ``min_photos`` photos. How often a
    person's own face is alone at that link, by quality: the measurement behind ``ModelBars.fine_link_quality``."""
    rows = np.flatnonzero(d.labelled)
    _, code, counts = np.unique(d.identity[rows], return_inverse=True, return_counts=True)
    rows, code = rows[counts[code] >= min_photos], code[counts[code] >= min_photos]
    X, q = d.X[rows], d.quality[rows]
    best = np.full(len(rows), -np.inf)
    for lo in range(0, len(rows), 1024):
        S = X[lo : lo + 1024] @ X.T
        own = code[lo : lo + 1024, None] == code[None, :]
        own[np.arange(S.shape[0]), np.arange(lo, lo + S.shape[0])] = False
        best[lo : lo + 1024] = np.where(own, S, -np.inf).max(axis=1)
    out = []
    for k in range(int(np.ceil(1 / step))):
        lo = round(k * step, 6)
        m = (q >= lo) & (q < lo + step) if k < int(np.ceil(1 / step)) - 1 else q >= lo
        if m.any():
            out.append((lo, int(m.sum()), float(np.mean(best[m] >= link))))
    return out


def fine_link_quality(bins: list[tuple[float, int, float]], rate: float) -> float:
    """The lowest bin edge from which every bin upward has at least ``rate`` of faces linked (1.0: none has)."""
    edge = 1.0
    for lo, _, share in reversed(bins):
        if share < rate:
            break
        edge = lo
    return edge


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = fn()
    return np.asarray(out), time.perf_counter() - t0
