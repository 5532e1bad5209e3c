"""Supervised assignment: give unlabelled faces to known persons when the evidence is strong enough.

Users label a few faces per person by hand ("manual"); everything here only *adds* assignments and never
touches a manual label. A face that is not confidently a known person is left unassigned (``-1``) so the
clustering stage can group it with other unknown faces instead of forcing it onto the nearest known person.

Design, and why:

* **Prototypes.** A person is represented by the centroid of their L2-normalised labelled embeddings *and* by
  a handful of exemplars. The centroid averages away pose/lighting noise and is the best single descriptor when
  a person looks consistent; exemplars keep distinct "modes" (young/old, glasses, profile) that a centroid
  blurs. Exemplars are medoids of a small spherical k-means (k-means++ seeded) rather than farthest-point picks:
  farthest-point deliberately selects the most atypical faces, i.e. mislabels and bad crops, and a
  max-over-exemplars score would then match impostors through exactly those faces.
* **Scores are cosines** (``hybrid`` = the larger of centroid cosine and mean of the two best exemplar
  cosines), so a single threshold is interpretable against the model's impostor distribution. w600k_mbf on
  the 330-photo dev set: different people mean 0.01, sd 0.065, p99 0.16, max 0.334 over 65k face pairs; a
  known person's faces reach their K=3 centroid at p5 ~0.37. Hence the recommended 0.40 (6 sd above the
  impostor mean, 0.07 above the highest impostor pair); bench/assign_calibration.py has the trade-off.
* **No re-centring.** Prototypes come from human labels only and never move because of faces automation
  matched: re-estimating a centroid from "confident" matches drifted one man's prototypes onto his brother's
  530 photos (issue 7). Recall beyond the per-face bar comes from suggestions a person confirms
  (:mod:`naming`), which then are human labels.
* **Cannot-link.** One person appears at most once in a photo, so the faces of a photo are matched to persons
  jointly (Hungarian algorithm) instead of greedily: the best overall matching wins, whatever the row order.
  The matching maximises the summed gain ``score - threshold`` of the assignments it makes. Measuring gain
  from the threshold (the break-even point between "assign" and "leave for clustering") rather than summing
  raw cosines stops a face that is clearly A (0.9) from being pushed onto a barely-passing B (0.41) only so
  that a second, weaker A-like face can take A.
* **Margin** is measured against the best person the face could still have had: persons the user rejected
  for it, persons already present in its photo through manual labels, and persons the matching gave to other
  *settled* faces of the same photo are not competitors, because we know the face is not them. A face settles
  when it passes the margin on its own or thanks to faces settled before it, so exclusions are well founded:
  two ambiguous faces (A/B and B/A) cannot vouch for each other in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np

STRATEGIES = ("centroid", "exemplar", "hybrid")

# Exemplar score = mean of the person's best ``_EXEMPLAR_TOP_K`` exemplar similarities. Top-2 rather than max:
# one exemplar that happens to resemble an impostor (a bad crop, a look-alike shot) then cannot carry the score
# alone, which trims the impostor tail; see bench/assign_calibration.py for the measurement.
_EXEMPLAR_TOP_K = 2
# k-means refinement rounds when choosing exemplars; a few suffice for the small per-person sets we see.
_KMEANS_ITERS = 10
# Cost for forbidden pairs in the assignment matrix; far beyond any |gain| (cosines live in [-1, 1]).
_FORBIDDEN = 1e6
# Elements of an (N, P) block scored at once by the exemplar score; bounds memory for large batches.
_CHUNK_ELEMENTS = 4_000_000


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-d array of embeddings, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # A zero vector (should not happen with ArcFace) stays zero and so scores 0 against everyone.
    return x / np.where(norms > 0, norms, 1.0)


@dataclass
class Prototypes:
    """What a known person looks like, in the embedding space faces are scored in.

    ``person_ids`` are the caller's ids in order of first appearance; every other array indexes into it.
    ``exemplar_index`` (optional) gives, for each exemplar, its row in the embeddings it was built from, so a
    match can be explained by showing the labelled face it resembled. ``centroid_weight`` (optional) is the
    length of the sum of the person's normalised faces, i.e. ``centroid * weight`` is that sum (how much
    evidence the centroid rests on).
    """

    person_ids: list
    centroids: np.ndarray  # (P, D), L2-normalised
    exemplars: np.ndarray  # (M, D), L2-normalised, grouped by owner
    exemplar_owner: np.ndarray  # (M,) int index into person_ids
    exemplar_index: np.ndarray | None = None  # (M,) row index into build_prototypes' embeddings
    centroid_weight: np.ndarray | None = None  # (P,) |sum of the person's normalised faces|

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def __len__(self) -> int:
        return len(self.person_ids)


def _pick_exemplars(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` diverse but typical rows of normalised ``x`` (n > k): spherical k-means medoids.

    Seeding is k-means++ (D^2 sampling on cosine distance) started from the face nearest the centroid, so the
    result depends only on ``rng``. Lloyd rounds then pull each seed to the middle of its group, and the member
    nearest each group mean is returned: a real labelled face, typical of its mode.
    """
    n = len(x)
    mean = x.mean(axis=0)
    first = int(np.argmax(x @ mean))
    seeds = [first]
    best_sim = x @ x[first]
    for _ in range(1, k):
        dist = np.clip(1.0 - best_sim.astype(np.float64), 0.0, None) ** 2
        dist[seeds] = 0.0
        total = dist.sum()
        nxt = int(rng.choice(n, p=dist / total)) if total > 0 else int(next(i for i in range(n) if i not in seeds))
        seeds.append(nxt)
        best_sim = np.maximum(best_sim, x @ x[nxt])
    centres = x[seeds].copy()
    for _ in range(_KMEANS_ITERS):
        label = np.argmax(x @ centres.T, axis=1)
        new = centres.copy()
        for c in range(k):
            members = x[label == c]
            if len(members):
                m = members.sum(axis=0)
                norm = np.linalg.norm(m)
                new[c] = m / norm if norm > 0 else centres[c]
        if np.allclose(new, centres):
            break
        centres = new
    label = np.argmax(x @ centres.T, axis=1)
    picks = []
    for c in range(k):
        members = np.flatnonzero(label == c)
        if len(members):
            picks.append(int(members[np.argmax(x[members] @ centres[c])]))
    return np.array(sorted(picks), dtype=np.int64)


def build_prototypes(
    embeddings: np.ndarray, person_ids: Sequence, max_exemplars: int = 16, seed: int = 0
) -> Prototypes:
    """Centroid plus up to ``max_exemplars`` exemplars per person from labelled faces.

    A person with at most ``max_exemplars`` faces keeps all of them as exemplars (with few labels every face is
    precious evidence). Larger sets are summarised by :func:`_pick_exemplars`; capping keeps scoring cost
    proportional to the number of persons rather than the number of labels.
    """
    x = _normalise(embeddings)
    if len(x) != len(person_ids):
        raise ValueError(f"{len(x)} embeddings but {len(person_ids)} person ids")
    if max_exemplars < 1:
        raise ValueError("max_exemplars must be >= 1")
    order: dict[Hashable, list[int]] = {}
    for row, pid in enumerate(person_ids):
        order.setdefault(pid, []).append(row)
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    centroids = np.zeros((len(order), d), dtype=np.float32)
    weights = np.zeros(len(order), dtype=np.float32)
    ex_rows: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    for p, rows in enumerate(order.values()):
        rows_a = np.asarray(rows, dtype=np.int64)
        members = x[rows_a]
        c = members.sum(axis=0)
        norm = np.linalg.norm(c)
        centroids[p] = c / norm if norm > 0 else c
        weights[p] = norm
        picked = rows_a if len(rows_a) <= max_exemplars else rows_a[_pick_exemplars(members, max_exemplars, rng)]
        ex_rows.append(picked)
        owners.append(np.full(len(picked), p, dtype=np.int64))
    ex_index = np.concatenate(ex_rows) if ex_rows else np.zeros(0, dtype=np.int64)
    return Prototypes(
        person_ids=list(order.keys()),
        centroids=centroids,
        exemplars=x[ex_index] if len(ex_index) else np.zeros((0, d), dtype=np.float32),
        exemplar_owner=np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64),
        exemplar_index=ex_index,
        centroid_weight=weights,
    )


def _exemplar_slots(protos: Prototypes) -> tuple[np.ndarray, np.ndarray]:
    """(slot (P, width) table of each person's exemplar rows padded with -1, exemplars per person (P,))."""
    p = len(protos)
    owner = np.asarray(protos.exemplar_owner, dtype=np.int64)
    counts = np.bincount(owner, minlength=p) if len(owner) else np.zeros(p, np.int64)
    slot = np.full((p, max(1, int(counts.max()) if len(owner) else 1)), -1, dtype=np.int64)
    if len(owner):
        order = np.argsort(owner, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot[owner[order], np.arange(len(owner)) - np.repeat(starts, counts)] = order
    return slot, counts


def _exemplar_scores(protos: Prototypes, xn: np.ndarray, top_k: int = _EXEMPLAR_TOP_K) -> np.ndarray:
    """(N, P) mean of each person's ``top_k`` best exemplar cosines (fewer if the person has fewer)."""
    n, p = len(xn), len(protos)
    out = np.full((n, p), -1.0, dtype=np.float32)
    if n == 0 or p == 0 or len(protos.exemplars) == 0:
        return out
    slot, counts = _exemplar_slots(protos)
    width = slot.shape[1]
    k = max(1, min(top_k, width))
    k_per = np.minimum(counts, k).astype(np.float32)
    has = counts > 0
    chunk = max(1, _CHUNK_ELEMENTS // max(1, p))
    for lo in range(0, n, chunk):
        sims = xn[lo : lo + chunk] @ protos.exemplars.T  # (n_c, M)
        # Running top-k per person, one exemplar slot at a time: O(width) passes over an (n_c, P) array,
        # no (n_c, P, width) gather, and ``width`` is at most max_exemplars.
        top = [np.full((len(sims), p), -np.inf, dtype=np.float32) for _ in range(k)]
        for w in range(width):
            col = slot[:, w]
            v = np.where(col >= 0, sims[:, np.maximum(col, 0)], -np.inf).astype(np.float32)
            for i in range(k):
                hi = np.maximum(top[i], v)
                v = np.minimum(top[i], v)
                top[i] = hi
        total = sum(np.where(np.isfinite(t), t, 0.0) for t in top)
        out[lo : lo + chunk, has] = total[:, has] / k_per[has]
    return out


def person_scores(protos: Prototypes, X: np.ndarray, strategy: str = "hybrid") -> np.ndarray:
    """(N, P) cosine scores of faces ``X`` against each known person.

    * ``centroid``: cosine to the person's centroid.
    * ``exemplar``: mean of the two best exemplar cosines (the only one for single-exemplar persons).
    * ``hybrid``: the larger of the two. Each is a cosine on roughly the same impostor scale, so the maximum
      needs no extra calibration; it keeps the centroid's robustness for ordinary faces and lets an unusual
      but labelled look (a distinct mode the centroid blurs) still match through its exemplars.
    """
    xn = _checked(protos, X, strategy)
    ex = _exemplar_scores(protos, xn) if strategy != "centroid" else None
    return _combine(protos.centroids, xn, ex, strategy)


#: Face x label-vector products computed exactly (blocked) before the candidate search switches to cells
#: (~4e9: 200k faces against 20k labels, about a minute of float32 GEMM on 2 cores).
EXACT_CANDIDATE_PAIRS = 4e9
#: Label cells probed per face by the approximate search (of ~2*sqrt(labels) cells).
CANDIDATE_PROBES = 24


def candidate_scores(protos: Prototypes, X: np.ndarray, strategy: str = "hybrid", floor: float = 0.2):
    """:func:`person_scores` for the (face, person) pairs that can reach ``floor`` only, as a sparse matrix.

    A library with a million faces and ten thousand named people cannot hold the dense (N, P) matrix (40 GB),
    and every rule that reads it only looks at persons at or above the impostor bar. A person can reach
    ``floor`` only if the face reaches ``floor`` against the person's centroid or one of their exemplars, so those
    label vectors are searched first — exactly (blocked products) up to :data:`EXACT_CANDIDATE_PAIRS` face x
    label pairs, else in cells of a spherical k-means over the labels (:data:`CANDIDATE_PROBES` probed per face).
    A pair the cells miss reads as below ``floor``. That usually means a missing name or suggestion, but if it is
    the face's true best person the runner-up could win: naming's rule 5 still vetoes it wherever the face's
    group holds the true person's labels, and the exact path covers libraries up to ~200k faces x 2k people.
    The scores of the candidate pairs are then computed exactly as :func:`person_scores` would.

    Returns a CSR matrix (N, P) of float32 scores; entries below ``floor`` are not stored (read them as "below
    the floor"). A score of exactly 0.0 cannot be told from an absent entry; cosines of real faces are never
    exactly 0 (a zero vector scores 0 against everyone and is below any sensible floor).
    """
    from scipy import sparse
    xn = _checked(protos, X, strategy)
    n, p = len(xn), len(protos)
    if n == 0 or p == 0:
        return sparse.csr_matrix((n, p), dtype=np.float32)
    use_cen, use_ex = strategy != "exemplar", strategy != "centroid" and len(protos.exemplars) > 0
    vectors = np.concatenate([v for v, on in ((protos.centroids, use_cen), (protos.exemplars, use_ex)) if on]).astype(np.float32)
    owner = np.concatenate([o for o, on in ((np.arange(p), use_cen), (np.asarray(protos.exemplar_owner, np.int64), use_ex)) if on])
    if float(n) * len(vectors) <= EXACT_CANDIDATE_PAIRS:
        f, q, vals = _exact_candidates(protos, xn, vectors, owner, floor, strategy, use_cen)
    else:
        faces, labels = _cell_hits(xn, vectors, floor)
        pairs = np.unique(faces.astype(np.int64) * p + owner[labels])
        del faces, labels
        f, q = pairs // p, pairs % p
        del pairs
        vals = _pair_scores(protos, xn, f, q, strategy)
    keep = vals >= floor
    return sparse.csr_matrix((vals[keep].astype(np.float32), (f[keep], q[keep])), shape=(n, p))


def _exact_candidates(protos, xn, vectors, owner, floor, strategy, use_cen):
    """Blocked exact search and scoring in one pass: each block's products against every label vector give both
    the candidate pairs and, read back from the same products, their exact scores (no second product)."""
    p = len(protos)
    n_cen = p if use_cen else 0
    slot, counts = _exemplar_slots(protos)
    width = int(counts.max()) if len(counts) else 0
    out_f, out_q, out_v = [], [], []
    step = max(1, _CHUNK_ELEMENTS // max(1, len(vectors)))
    for lo in range(0, len(xn), step):
        sims = xn[lo : lo + step] @ vectors.T
        r, c = np.nonzero(sims >= floor)
        if r.size == 0:
            continue
        pairs = np.unique(r.astype(np.int64) * p + owner[c])
        rr, q = pairs // p, pairs % p
        cen = sims[rr, q] if use_cen else None
        ex = None
        if strategy != "centroid" and width:
            cols = slot[q]
            ex = _best_exemplars_mean(np.where(cols >= 0, sims[rr[:, None], n_cen + np.maximum(cols, 0)], -np.inf), counts[q])
        out_f.append(rr + lo)
        out_q.append(q)
        out_v.append(_pair_combine(cen, ex, strategy))
    if not out_f:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(out_f), np.concatenate(out_q), np.concatenate(out_v)


def _cell_hits(xn: np.ndarray, vectors: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """(face rows, vector rows) of the pairs with cosine >= ``floor`` that the label cells find (the approximate
    search of :func:`candidate_scores`; the exact one is :func:`_exact_candidates`)."""
    from face_pipeline.core.clustering.neighbours import _nearest_cells, _spherical_kmeans

    m = len(vectors)
    hits_f: list[np.ndarray] = []
    hits_l: list[np.ndarray] = []
    cells = int(np.clip(round(2 * np.sqrt(m)), 8, 1024))
    cent = _spherical_kmeans(vectors, cells, np.random.default_rng(0))
    home = _nearest_cells(vectors, cent, 1)[:, 0]
    probes = _nearest_cells(xn, cent, min(CANDIDATE_PROBES, cells))
    for c in range(cells):
        members = np.flatnonzero(home == c)
        queries = np.flatnonzero((probes == c).any(axis=1))
        if members.size == 0 or queries.size == 0:
            continue
        step = max(1, _CHUNK_ELEMENTS // members.size)
        for lo in range(0, queries.size, step):
            q = queries[lo : lo + step]
            r, k = np.nonzero(xn[q] @ vectors[members].T >= floor)
            hits_f.append(q[r].astype(np.int32))
            hits_l.append(members[k].astype(np.int32))
    if not hits_f:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(hits_f), np.concatenate(hits_l)


def pair_scores(protos: Prototypes, X: np.ndarray, f: np.ndarray, q: np.ndarray, strategy: str = "hybrid") -> np.ndarray:
    """:func:`person_scores` for the pairs (face ``f[i]`` of ``X``, person ``q[i]``) only, exactly."""
    return _pair_scores(protos, _checked(protos, X, strategy), np.asarray(f, np.int64), np.asarray(q, np.int64), strategy)


def _pair_scores(protos: Prototypes, xn: np.ndarray, f: np.ndarray, q: np.ndarray, strategy: str) -> np.ndarray:
    """:func:`pair_scores` on normalised faces."""
    out = np.full(len(f), -1.0, np.float32)
    if len(f) == 0:
        return out
    cen = None
    if strategy != "exemplar":  # in chunks: tens of millions of pairs at a million faces
        cen = np.empty(len(f), np.float32)
        step = max(1, _CHUNK_ELEMENTS // xn.shape[1])
        for lo in range(0, len(f), step):
            cen[lo : lo + step] = np.einsum("ij,ij->i", xn[f[lo : lo + step]], protos.centroids[q[lo : lo + step]])
    ex = None
    if strategy != "centroid" and len(protos.exemplars):
        slot, counts = _exemplar_slots(protos)
        width = slot.shape[1]
        ex = np.empty(len(f), np.float32)
        step = max(1, _CHUNK_ELEMENTS // (width * xn.shape[1]))
        for lo in range(0, len(f), step):
            sl = slice(lo, lo + step)
            cols = slot[q[sl]]  # (b, width)
            sims = np.einsum("bwd,bd->bw", protos.exemplars[np.maximum(cols, 0)], xn[f[sl]])
            sims[cols < 0] = -np.inf
            ex[sl] = _best_exemplars_mean(sims, counts[q[sl]])
    return _pair_combine(cen, ex, strategy)


def _best_exemplars_mean(sims: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per row of (pairs, width) exemplar similarities (-inf = no exemplar), the mean of the best
    ``_EXEMPLAR_TOP_K`` (fewer for a person with fewer exemplars): the exemplar score of each pair."""
    top = -np.sort(-sims, axis=1)[:, :_EXEMPLAR_TOP_K]
    return (np.where(np.isfinite(top), top, 0.0).sum(axis=1) / np.maximum(np.minimum(counts, _EXEMPLAR_TOP_K), 1)).astype(np.float32)


def _pair_combine(cen: np.ndarray | None, ex: np.ndarray | None, strategy: str) -> np.ndarray:
    """The pair form of :func:`_combine`: centroid, exemplar, or the larger of the two (hybrid)."""
    if strategy == "centroid" or ex is None:
        return np.asarray(cen, np.float32)
    if strategy == "exemplar":
        return ex
    return np.maximum(cen, ex).astype(np.float32)


def _checked(protos: Prototypes, X: np.ndarray, strategy: str) -> np.ndarray:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    xn = _normalise(X)
    if len(protos) and xn.shape[1] != protos.dim:
        raise ValueError(f"faces have dimension {xn.shape[1]}, prototypes {protos.dim}")
    return xn


def _combine(centroids: np.ndarray, xn: np.ndarray, ex: np.ndarray | None, strategy: str) -> np.ndarray:
    if len(centroids) == 0:
        return np.zeros((len(xn), 0), dtype=np.float32)
    if strategy == "exemplar":
        return ex
    cen = xn @ centroids.T
    return cen if strategy == "centroid" else np.maximum(cen, ex)


@dataclass
class Assignment:
    """Result of :func:`assign_faces`, one entry per face.

    ``person_index`` is the assigned person (index into ``Prototypes.person_ids``) or -1. For an unassigned face
    ``confidence``/``runner_up``/``margin`` describe its best *admissible* candidate instead (persons it was
    rejected for, or that its photo already holds, are skipped), so a UI can still suggest "maybe X?".
    ``margin`` is ``confidence`` minus the runner-up's score: +inf with no runner-up, NaN with no candidate at
    all (then ``confidence`` is -inf).
    """

    person_index: np.ndarray  # (N,) int, -1 = none
    confidence: np.ndarray  # (N,) float
    margin: np.ndarray  # (N,) float
    runner_up: np.ndarray  # (N,) int, -1 = none

    def person_ids(self, protos: Prototypes) -> list:
        """Assigned person ids, ``None`` for unassigned faces."""
        return [protos.person_ids[i] if i >= 0 else None for i in self.person_index]


def _top2(scores: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best and second-best admissible person per row (index -1 / score -inf where none)."""
    s = np.where(allowed, scores, -np.inf)
    n, p = s.shape
    if p == 0:
        none = np.full(n, -1, dtype=np.int64)
        return none, np.full(n, -np.inf), none.copy(), np.full(n, -np.inf)
    rows = np.arange(n)
    first = np.argmax(s, axis=1)
    first_s = s[rows, first]
    s2 = s.copy()
    s2[rows, first] = -np.inf
    second = np.argmax(s2, axis=1) if p > 1 else np.zeros(n, dtype=np.int64)
    second_s = s2[rows, second] if p > 1 else np.full(n, -np.inf)
    first = np.where(np.isfinite(first_s), first, -1)
    second = np.where(np.isfinite(second_s), second, -1)
    return first, first_s, second, second_s


def _match_group(gain: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Max-total-gain partial matching of rows (faces of one photo) to columns (persons); -1 = unmatched.

    Each row also gets a private "stay unassigned" column of gain 0, so leaving a face out is always possible
    and the solver never forces a forbidden pair just to match more rows.
    """
    n, p = gain.shape
    cols = np.flatnonzero(valid.any(axis=0))  # only persons someone in the photo may take
    out = np.full(n, -1, dtype=np.int64)
    if len(cols) == 0:
        return out
    cost = np.full((n, len(cols) + n), _FORBIDDEN)
    sub_valid = valid[:, cols]
    # Tiny bonus so a pair exactly at the threshold (gain 0) still beats staying unassigned.
    cost[:, : len(cols)] = np.where(sub_valid, -(gain[:, cols] + 1e-9), _FORBIDDEN)
    cost[np.arange(n), len(cols) + np.arange(n)] = 0.0
    from scipy.optimize import linear_sum_assignment  # imported on first use: scipy costs ~0.5 s to import

    r, c = linear_sum_assignment(cost)
    for row, col in zip(r, c):
        if col < len(cols) and sub_valid[row, col]:
            out[row] = cols[col]
    return out


def _groups_of(groups: Sequence | None, n: int) -> list[list[int]]:
    """Row indices of every photo with two or more faces (a missing/None photo id is a photo of its own)."""
    if groups is None:
        return []
    if len(groups) != n:
        raise ValueError(f"{n} faces but {len(groups)} group ids")
    rows: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        if g is not None:
            rows.setdefault(g, []).append(i)
    return [r for r in rows.values() if len(r) > 1]


def _independent(rows: list[int], person: list[int], best: list[int], second: list[int]) -> bool:
    """True when the per-face answers of a photo cannot interact: no face's best or second-best admissible
    person is what another face of the photo was given. Then the per-face answers already form the optimal
    matching (every face has its individually best valid person, none shared), and no runner-up or margin
    changes by excluding the other faces' persons; the matching can be skipped."""
    given = [(r, person[r]) for r in rows if person[r] >= 0]
    if not given:
        return True
    for r in rows:
        for other, q in given:
            if other != r and (q == best[r] or q == second[r]):
                return False
    return True


def assign_faces(
    protos: Prototypes,
    X: np.ndarray,
    *,
    threshold: float,
    margin: float = 0.0,
    strategy: str = "hybrid",
    groups: Sequence | None = None,
    rejected: dict[int, set[int]] | None = None,
    occupied: dict[Hashable, set[int]] | None = None,
) -> Assignment:
    """Assign faces ``X`` to known persons, or to nobody.

    A face may get person ``p`` only if its score is >= ``threshold``, ``p`` is not in ``rejected[row]`` (the
    user said "not this person"), ``p`` is not in ``occupied[photo]`` (the photo already shows ``p`` through a
    manual label) and no other face of the same photo gets ``p``. Within a photo the matching with the largest
    total ``score - threshold`` wins. Finally the chosen person must beat the best remaining admissible
    alternative (see module docstring) by at least ``margin``; a pair that fails is withdrawn and the photo
    re-solved, so the rule holds for the final matching and an ambiguous face is left unassigned rather than
    shuffled onto a weaker candidate.

    Scores are against the prototypes as given (human labels only): nothing here moves a prototype.
    """
    xn = _checked(protos, X, strategy)
    ex = _exemplar_scores(protos, xn) if strategy != "centroid" else None
    return assign_scores(_combine(protos.centroids, xn, ex, strategy), threshold=threshold, margin=margin, groups=groups,
                         rejected=rejected, occupied=occupied)


def assign_scores(
    scores: np.ndarray,
    *,
    threshold: float,
    margin: float = 0.0,
    groups: Sequence | None = None,
    rejected: dict[int, set[int]] | None = None,
    occupied: dict[Hashable, set[int]] | None = None,
) -> Assignment:
    """:func:`assign_faces` on a precomputed (N, P) score matrix, for callers that score faces their own way
    (a learned projection, the calibration bench's variants)."""
    scores = np.asarray(scores)
    n, p = scores.shape
    allowed = np.ones((n, p), dtype=bool)  # admissible regardless of score: constraints the user gave us
    for row, persons in (rejected or {}).items():
        idx = [q for q in persons if 0 <= q < p]
        if idx and 0 <= row < n:
            allowed[row, idx] = False
    if occupied:
        if groups is None:
            raise ValueError("occupied needs groups (the photo id of every face)")
        for row, g in enumerate(groups):
            taken = occupied.get(g) if g is not None else None
            if taken:
                idx = [q for q in taken if 0 <= q < p]
                allowed[row, idx] = False
    valid = allowed & (scores >= threshold)

    # Photos with one face (the vast majority) need no matching: the best admissible person is the answer.
    best, best_s, second, second_s = _top2(scores, allowed)
    person = np.where((best >= 0) & (best_s >= threshold), best, -1)
    with np.errstate(invalid="ignore"):
        gap = best_s - second_s
    person = np.where(gap >= margin, person, -1)
    confidence = best_s.astype(np.float64)
    runner = second.copy()
    gaps = gap.astype(np.float64)

    person_l, best_l, second_l = person.tolist(), best.tolist(), second.tolist()
    for rows_l in _groups_of(groups, n):
        if _independent(rows_l, person_l, best_l, second_l):
            continue  # typical: strangers next to one known person
        rows = np.asarray(rows_l, dtype=np.int64)
        g_valid = valid[rows].copy()
        g_allowed = allowed[rows]
        g_scores = scores[rows].astype(np.float64)
        g_b, g_b_s, _, g_s_s = _top2(g_scores, g_allowed)
        at = np.arange(len(rows))
        while True:
            match = _match_group(g_scores - threshold, g_valid)
            match_s = np.where(match >= 0, g_scores[at, np.maximum(match, 0)], -np.inf)
            # A matched face is *settled* when its person leads every remaining admissible alternative by
            # ``margin``, where persons held by already-settled faces of the photo are not alternatives.
            # Faces that lead on their own settle first; settling then spreads along chains (B is settled
            # because A's face is), but never around a circle, so two ambiguous faces (A/B and B/A) cannot
            # vouch for each other. At margin 0 every face of an optimal matching settles.
            with np.errstate(invalid="ignore"):
                own_gap = match_s - np.where(g_b == match, g_s_s, g_b_s)
            settled = (match >= 0) & (own_gap >= margin)
            while True:
                ruled_out = np.zeros_like(g_allowed)
                for j in np.flatnonzero(settled):
                    ruled_out[at != j, match[j]] = True
                b, b_s, s, s_s = _top2(g_scores, g_allowed & ~ruled_out)
                prim = np.where(match >= 0, match, b)
                prim_s = np.where(prim >= 0, g_scores[at, np.maximum(prim, 0)], -np.inf)
                # Runner-up = best remaining admissible person other than the primary; when that best is not
                # the matched person (its pair was withdrawn, or an unsettled face holds it) it is the
                # runner-up and the margin is negative.
                alt = np.where(b == prim, s, b)
                alt_s = np.where(b == prim, s_s, b_s)
                with np.errstate(invalid="ignore"):
                    g_gap = prim_s - alt_s
                grown = settled | ((match >= 0) & (g_gap >= margin))
                if np.array_equal(grown, settled):
                    break
                settled = grown
            failing = (match >= 0) & ~settled
            if not failing.any():
                break
            g_valid[np.flatnonzero(failing), match[failing]] = False
        person[rows] = match
        confidence[rows] = prim_s
        runner[rows] = alt
        gaps[rows] = g_gap

    gaps = np.where(np.isneginf(confidence), np.nan, gaps)
    return Assignment(
        person_index=person.astype(np.int64),
        confidence=confidence,
        margin=gaps,
        runner_up=runner.astype(np.int64),
    )


def _known_unknown_split(people: list, n_folds: int, rng: np.random.Generator) -> list[set]:
    perm = [people[i] for i in rng.permutation(len(people))]
    return [set(perm[f::n_folds]) for f in range(n_folds)]


def calibrate_threshold(
    embeddings: np.ndarray,
    person_ids: Sequence,
    groups: Sequence | None = None,
    strategy: str = "hybrid",
    target_precision: float = 0.995,
    *,
    labels_per_person: int = 3,
    n_folds: int = 2,
    repeats: int = 3,
    grid: Sequence[float] | None = None,
    max_exemplars: int = 16,
    impostor_headroom: float | None = None,
    seed: int = 0,
) -> float:
    """Lowest grid threshold at and above which assignment precision stays >= ``target_precision``,
    estimated by simulation on labelled faces, for a scoring space with no settled threshold yet (e.g. a
    learned projection).

    Each repeat splits the people into ``n_folds`` folds; in turn one fold plays "unknown people" (any
    assignment of their faces is an error: strangers are what the threshold mostly guards against) and the
    rest are known, each with ``labels_per_person`` seeded faces as labels (a user labels a few) and the rest
    as queries, which can also go to the wrong known person. Queries run through the same code as
    :func:`assign_faces` (cannot-link and "occupied" via ``groups`` when given). Counts are
    pooled over folds and repeats, and precision must hold on the whole upper part of the grid, not at one
    point, because with a few hundred queries a single lucky threshold is noise.

    The simulation is optimistic on small sets: a few dozen held-out people are far fewer strangers than a
    real library meets, so their highest score understates the impostor tail (on the 330-photo raw dev set it
    accepts 0.25, where the bench argues for 0.40). ``impostor_headroom`` (off by default) additionally keeps
    the threshold that far above the highest cosine between *any* two labelled faces of different people, a
    much larger sample of the same tail (raw dev set, centre faces only: 0.29 + 0.05 -> 0.35). It is off
    because a fixed cosine headroom only means something in a space whose spread is known (raw ArcFace: sd
    0.065), not in a freshly learned projection. If no grid point qualifies the highest is returned.
    Deterministic for a given ``seed``.
    """
    x = _normalise(embeddings)
    pid = np.asarray(list(person_ids), dtype=object)
    if len(pid) != len(x):
        raise ValueError(f"{len(x)} embeddings but {len(pid)} person ids")
    grid_a = np.round(np.arange(0.20, 0.80 + 1e-9, 0.01), 4) if grid is None else np.sort(np.asarray(grid, float))
    people = list(dict.fromkeys(pid.tolist()))
    if len(people) < 2:
        raise ValueError("calibration needs at least two people")
    groups_a = None if groups is None else np.asarray(list(groups), dtype=object)
    rng = np.random.default_rng(seed)
    assigned = np.zeros(len(grid_a), dtype=np.int64)
    correct = np.zeros(len(grid_a), dtype=np.int64)
    for _ in range(repeats):
        for unknown in _known_unknown_split(people, n_folds, rng):
            label_rows: list[int] = []
            for person in people:
                if person in unknown:
                    continue
                rows = np.flatnonzero(pid == person)
                k = min(labels_per_person, len(rows) - 1) if len(rows) > 1 else len(rows)
                label_rows.extend(rng.choice(rows, size=k, replace=False).tolist())
            if not label_rows:
                continue
            is_label = np.zeros(len(x), dtype=bool)
            is_label[label_rows] = True
            protos = build_prototypes(x[is_label], pid[is_label].tolist(), max_exemplars=max_exemplars, seed=seed)
            index = {q: i for i, q in enumerate(protos.person_ids)}
            query = np.flatnonzero(~is_label)
            truth = np.array([index.get(q, -2) for q in pid[query]])
            q_groups = None if groups_a is None else groups_a[query].tolist()
            occupied: dict[Hashable, set[int]] | None = None
            if groups_a is not None:
                occupied = {}
                for r in np.flatnonzero(is_label):
                    occupied.setdefault(groups_a[r], set()).add(index[pid[r]])
            xq = x[query]
            ex = _exemplar_scores(protos, xq) if strategy != "centroid" else None
            for t_i, t in enumerate(grid_a):
                res = assign_scores(_combine(protos.centroids, xq, ex, strategy), threshold=float(t), margin=0.0, groups=q_groups,
                                    occupied=occupied)
                got = res.person_index >= 0
                assigned[t_i] += int(got.sum())
                correct[t_i] += int((res.person_index[got] == truth[got]).sum())
    precision = np.where(assigned > 0, correct / np.maximum(assigned, 1), 1.0)
    ok = precision >= target_precision
    if impostor_headroom is not None:
        ok &= grid_a >= _max_impostor_cosine(x, pid) + impostor_headroom
    # Index of the lowest grid point from which every higher point is also ok.
    tail_ok = np.flip(np.cumprod(np.flip(ok))).astype(bool)
    return float(grid_a[np.argmax(tail_ok)]) if tail_ok.any() else float(grid_a[-1])


def _max_impostor_cosine(xn: np.ndarray, pid: np.ndarray, chunk: int = 2048) -> float:
    """Highest cosine between two faces of different people (all pairs, in row chunks to bound memory)."""
    codes = np.unique(pid.astype(str), return_inverse=True)[1]
    best = -1.0
    for lo in range(0, len(xn), chunk):
        sims = xn[lo : lo + chunk] @ xn.T
        sims[codes[lo : lo + chunk, None] == codes[None, :]] = -np.inf
        best = max(best, float(sims.max()))
    return best
