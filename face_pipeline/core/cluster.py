"""Clustering of unknown faces (ArcFace embeddings), incremental assignment and stable cluster ids.

Why the design looks like this
------------------------------
* **Cosine similarity on L2-normalised vectors.** ArcFace is trained with an angular margin, so the angle is
  the quantity the model makes meaningful. With w600k_mbf different people score mean ~0.04 (p99 ~0.29,
  max ~0.33 on LFW) and the same person ~0.4-0.9.
* **Default threshold 0.40.** It is the lowest value that stays clear of the whole different-people tail
  (max ~0.33), so it links as many of a person's weaker photos as possible without linking strangers.
  Measured: real dev set BCubed F 1.000 at 0.35-0.40, 0.973 at 0.45, 0.953 at 0.50; Chinese Whispers at
  0.40 scored 0.993 on full LFW. The synthetic stress set (whose stranger tail is far heavier than the real
  one: max ~0.5) prefers 0.45 at 200k faces (0.947 vs 0.938), so 0.45 is the setting for a library of
  look-alikes; see ``bench/cluster.py``.
* **Sparse k-nearest-neighbour graph first, clustering second.** Every method works on a kNN graph, so memory
  is O(N*k), not O(N^2). Up to :data:`EXACT_KNN_MAX` faces the graph is exact (blocked matrix products);
  above, an inverted-file index (:func:`ivf_knn_graph`), because exact search is O(N^2 * D): ~25 s of
  matrix products at 50k and ~400 s at 200k on two cores, against targets of 15 s and 90 s. Neighbours below
  a floor that the method never uses are dropped on both paths.
* **Chinese Whispers is the default.** Connected components of the threshold graph chain different people
  through one bridging face. Chinese Whispers lets every face adopt the label that carries the most edge
  weight among its neighbours, so a bridge cannot outvote the many edges inside each person. It has no
  minimum cluster size, unlike HDBSCAN, which cannot form a cluster for a person with fewer photos than
  ``min_cluster_size`` — and most people in a personal library have one or two photos. Two guards around
  it: clusters whose mean pairwise similarity is too low for one person are re-split by average linkage
  (:func:`_split_incoherent`), and noise faces with clear evidence for one cluster join it
  (:func:`_attach_noise`).
* **Same-photo constraint.** Two faces of one photo are two different people. The graph method removes those
  edges before clustering; every method then runs :func:`_split_group_conflicts`, because transitivity can
  still bring two faces of one photo together.

Labels are int64 with ``-1`` for noise (a face in no cluster of at least ``min_size`` faces).
"""

from __future__ import annotations

import heapq
import math
import re
from typing import Hashable, Sequence

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

METHODS = ("graph", "agglomerative", "hdbscan", "dbscan")

#: Default link similarity (see module docstring for why 0.40).
DEFAULT_THRESHOLD = 0.40

#: Largest N for which :func:`cluster_faces` builds the exact kNN graph; above it the IVF index is used.
#: Exact search costs ~1 s at 10k and grows as N^2; IVF loses a little quality (bench: graph-exact vs graph),
#: so the switch is made where exact search stops being cheap.
EXACT_KNN_MAX = 12_000

#: Noise rescue for the graph method (:func:`_attach_noise`): floor = threshold - ATTACH_DROP, margin.
ATTACH_DROP = 0.1
ATTACH_MARGIN = 0.1
#: Graph clusters with mean pairwise similarity < threshold - COHESION_DROP are re-split by average linkage
#: at threshold - SPLIT_DROP (:func:`_split_incoherent`).
COHESION_DROP = 0.15
SPLIT_DROP = 0.0
#: HDBSCAN sees only neighbours with similarity >= this; a face whose min_samples-th neighbour is below it
#: (cosine distance > 0.7, far outside any person) is noise without asking HDBSCAN.
HDBSCAN_FLOOR = 0.3

# Elements of one similarity block (rows x columns). 2**24 float32 = 64 MiB: keeps peak memory flat in N.
_BLOCK_ELEMS = 1 << 24
# Similarity evaluations the IVF search aims for when choosing n_probe (~25 s of float32 GEMM on 2 cores).
_IVF_PAIR_BUDGET = 2.5e9
# Buffered IVF candidates before they are folded into the running top k (memory: ~12 bytes each).
_IVF_MERGE_EVERY = 8_000_000
# Columns per chunk when selecting the top k of a long row; argpartition is ~5x faster on cache-sized rows.
_TOPK_CHUNK = 4096


# ---------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------
def _normalise(X: np.ndarray) -> np.ndarray:
    """Float32, C-contiguous, unit rows. Returns the input itself when it already is (no 400 MB copy at 200k)."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-d array of embeddings, got shape {X.shape}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.shape[0] == 0:
        return X
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    if np.all(np.abs(norms - 1.0) < 1e-3):
        return X
    # Zero vectors stay zero: they have similarity 0 to everything and end up as noise.
    return X / np.maximum(norms, 1e-12)[:, None]


def _group_codes(groups: Sequence | None, n: int) -> np.ndarray | None:
    """Photo ids → dense int codes. ``None`` entries are unconstrained (each gets a code of its own)."""
    if groups is None:
        return None
    g = list(groups)
    if len(g) != n:
        raise ValueError(f"groups has {len(g)} entries for {n} faces")
    codes = np.empty(n, dtype=np.int64)
    seen: dict[Hashable, int] = {}
    for i, x in enumerate(g):
        if x is None:
            codes[i] = -1 - i  # unique negative code: never equal to another face's
        else:
            codes[i] = seen.setdefault(x, len(seen))
    return codes


def _topk_desc(S: np.ndarray, k: int, col_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of every row of ``S`` (k <= S.shape[1]), sorted by value descending.

    Long rows are cut into cache-sized column chunks, each reduced to its own top k, and the survivors
    reduced again: ``np.argpartition`` over a 200k-wide row is ~20 ns/element but ~4 ns on 4k-wide chunks.
    """
    n_rows, n_cols = S.shape
    if col_ids is None:
        col_ids = np.arange(n_cols, dtype=np.int64)
    if n_cols > 2 * _TOPK_CHUNK and k < _TOPK_CHUNK // 4:
        parts_i, parts_v = [], []
        for c0 in range(0, n_cols, _TOPK_CHUNK):
            i, v = _topk_desc(S[:, c0 : c0 + _TOPK_CHUNK], min(k, min(_TOPK_CHUNK, n_cols - c0)), col_ids[c0 : c0 + _TOPK_CHUNK])
            parts_i.append(i)
            parts_v.append(v)
        return _merge_topk(np.hstack(parts_i), np.hstack(parts_v), k)
    if k < n_cols:
        part = np.argpartition(S, n_cols - k, axis=1)[:, n_cols - k :]
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    vals = np.take_along_axis(S, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return col_ids[np.take_along_axis(part, order, axis=1)], np.take_along_axis(vals, order, axis=1)


def _merge_topk(ids: np.ndarray, vals: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` per row of candidate (id, value) pairs, sorted by value descending."""
    sel_i, sel_v = _topk_desc(vals, min(k, vals.shape[1]))
    return np.take_along_axis(ids, sel_i, axis=1), sel_v


# ---------------------------------------------------------------------------------------------------------
# nearest neighbours
# ---------------------------------------------------------------------------------------------------------
def knn_graph(X: np.ndarray, k: int, block: int = 2048, exclude_self: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by cosine similarity, by blocked matrix products.

    ``X`` should be L2-normalised float32 (N, D); other input is normalised (a copy) so that callers passing
    raw embeddings still get cosine neighbours. Returns ``(indices (N, k) int64, sims (N, k) float32)``,
    each row sorted by similarity descending. ``k`` is capped at the number of other faces. Work is done
    ``block`` rows at a time, so memory is bounded by ~``block * N`` floats (the block is shrunk further when
    ``block * N`` exceeds 2**24 elements, which keeps 200k faces under ~200 MB of scratch).
    """
    X = _normalise(X)
    n = X.shape[0]
    k = int(min(k, n - 1 if exclude_self else n))
    if k <= 0 or n == 0:
        return np.empty((n, 0), np.int64), np.empty((n, 0), np.float32)
    b = int(max(1, min(block, _BLOCK_ELEMS // max(n, 1))))
    out_i = np.empty((n, k), np.int64)
    out_s = np.empty((n, k), np.float32)
    for i0 in range(0, n, b):
        i1 = min(n, i0 + b)
        S = X[i0:i1] @ X.T
        if exclude_self:
            S[np.arange(i1 - i0), np.arange(i0, i1)] = -np.inf
        out_i[i0:i1], out_s[i0:i1] = _topk_desc(S, k)
    return out_i, out_s


def _spherical_kmeans(X: np.ndarray, n_cells: int, rng: np.random.Generator, iters: int = 8) -> np.ndarray:
    """Unit-norm centroids from a sample of X (cosine k-means); empty cells are re-seeded from the sample."""
    n = X.shape[0]
    sample = X[np.sort(rng.choice(n, size=min(n, 32 * n_cells), replace=False))]
    cent = sample[rng.choice(sample.shape[0], size=n_cells, replace=False)].copy()
    for _ in range(iters):
        assign = _nearest_cells(sample, cent, 1)[:, 0]
        M = sparse.csr_matrix((np.ones(sample.shape[0], np.float32), (assign, np.arange(sample.shape[0]))), shape=(n_cells, sample.shape[0]))
        sums = np.asarray(M @ sample, dtype=np.float32)
        norms = np.linalg.norm(sums, axis=1)
        empty = norms < 1e-6
        if empty.any():
            sums[empty] = sample[rng.choice(sample.shape[0], size=int(empty.sum()), replace=False)]
            norms[empty] = 1.0
        cent = sums / norms[:, None]
    return np.ascontiguousarray(cent, dtype=np.float32)


def _nearest_cells(X: np.ndarray, cent: np.ndarray, p: int) -> np.ndarray:
    """Indices (N, p) int32 of each row's ``p`` most similar centroids, most similar first."""
    n = X.shape[0]
    out = np.empty((n, p), np.int32)
    b = max(1, _BLOCK_ELEMS // max(cent.shape[0], 1))
    for i0 in range(0, n, b):
        S = X[i0 : i0 + b] @ cent.T
        out[i0 : i0 + b] = _topk_desc(S, p)[0] if p > 1 else np.argmax(S, axis=1)[:, None]
    return out


def ivf_knn_graph(
    X: np.ndarray,
    k: int,
    *,
    floor: float = 0.0,
    n_cells: int | None = None,
    n_probe: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate kNN (same layout as :func:`knn_graph`, self excluded) with an inverted-file index.

    Points are bucketed into ~2*sqrt(N) cells by spherical k-means; each query scans only the points of its
    ``n_probe`` most similar cells (default: as many as a budget of ~2.5e9 similarity evaluations allows,
    16 to 32) and keeps its top ``k`` among those with similarity >= ``floor``. Rows with fewer are padded
    with index -1 / similarity -inf. Work is ~N * n_probe * N/cells * D instead of N^2 * D.

    ``floor`` keeps memory and selection cost proportional to the useful edges: clustering never uses an edge
    below its link threshold (minus the noise-rescue drop), so those need not be ranked. Recall is not
    perfect: on synthetic 512-d faces at 50k, ~1% of same-person edges >= 0.45 are missed (~7% for people
    with <= 20 photos, whose faces can fall in far-apart cells); the bench reports the effect on BCubed F.
    Deterministic for a given ``seed``.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    n = X.shape[0]
    k = int(min(k, n - 1))
    if k <= 0:
        return np.empty((n, 0), np.int64), np.empty((n, 0), np.float32)
    C = int(min(n, n_cells or np.clip(round(2 * math.sqrt(n)), 8, 4096)))
    if n_probe is None:
        # scanned pairs ~ N * P * N/C * 1.75 (k-means cells are uneven and busy cells are probed more)
        n_probe = int(np.clip(_IVF_PAIR_BUDGET / (1.75 * n * n / C), 16, 32))
    P = int(min(n_probe, C))
    rng = np.random.default_rng(seed)
    cent = _spherical_kmeans(X, C, rng)
    probes = _nearest_cells(X, cent, P)  # probes[:, 0] is the home cell
    home = probes[:, 0].astype(np.int64)

    mem_order = np.argsort(home, kind="stable")
    mem_start = np.searchsorted(home[mem_order], np.arange(C + 1))
    pos_in_cell = np.empty(n, np.int64)
    pos_in_cell[mem_order] = np.arange(n) - mem_start[home[mem_order]]
    flat = probes.ravel().astype(np.int64)
    q_order = np.argsort(flat, kind="stable")
    q_start = np.searchsorted(flat[q_order], np.arange(C + 1))
    del flat, probes

    # Candidates (query, neighbour, sim) are buffered and folded into the running top k every ~8M, which
    # bounds memory and lets each query's running k-th best ("bar") skip most later candidates.
    best_i = np.full((n, k), -1, np.int32)
    best_s = np.full((n, k), -np.inf, np.float32)
    bar = np.full(n, floor, np.float32)
    buf: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    buffered = 0
    for c in range(C):
        mem = mem_order[mem_start[c] : mem_start[c + 1]]
        if mem.size == 0:
            continue
        Xm = X[mem]
        qs_c = q_order[q_start[c] : q_start[c + 1]] // P
        step = max(1, _BLOCK_ELEMS // 4 // mem.size)
        for j0 in range(0, qs_c.size, step):
            qs = qs_c[j0 : j0 + step]
            S = X[qs] @ Xm.T
            own = np.flatnonzero(home[qs] == c)  # queries that live in this cell: hide themselves
            S[own, pos_in_cell[qs[own]]] = -np.inf
            mask = S >= bar[qs][:, None]
            cnt = np.count_nonzero(mask, axis=1)
            heavy = np.flatnonzero(cnt > k)
            if heavy.size:  # more than k candidates in this cell: only its top k can matter
                mask[heavy] = False
                ti, ts = _topk_desc(S[heavy], k, mem)
                keep = (ts >= bar[qs[heavy]][:, None]).ravel()
                buf.append((np.repeat(qs[heavy], k)[keep].astype(np.int32), ti.ravel()[keep].astype(np.int32), ts.ravel()[keep]))
            flat = np.flatnonzero(mask)  # 1-d flatnonzero is ~5x faster than 2-d nonzero
            r, cc = np.divmod(flat, mem.size)
            buf.append((qs[r].astype(np.int32), mem[cc].astype(np.int32), S.ravel()[flat]))
            buffered += buf[-1][0].size + (buf[-2][0].size if heavy.size else 0)
            if buffered > _IVF_MERGE_EVERY:
                _fold_candidates(best_i, best_s, bar, floor, buf)
                buf, buffered = [], 0
    _fold_candidates(best_i, best_s, bar, floor, buf)
    return best_i.astype(np.int64), best_s


def _fold_candidates(best_i, best_s, bar, floor, buf) -> None:
    """Merge buffered (query, neighbour, sim) candidates into the running per-row top k, in place."""
    if not buf:
        return
    n, k = best_i.shape
    q = np.concatenate([b[0] for b in buf])
    rows = np.unique(q)
    old_ok = best_i[rows] >= 0
    q = np.concatenate([np.repeat(rows.astype(np.int32), k)[old_ok.ravel()], q])
    c = np.concatenate([best_i[rows][old_ok], *(b[1] for b in buf)])
    s = np.concatenate([best_s[rows][old_ok], *(b[2] for b in buf)])
    idx, sims = _rows_topk(n, k, q, c, s)
    best_i[rows] = idx[rows]
    best_s[rows] = sims[rows]
    full = best_i[rows, k - 1] >= 0
    bar[rows[full]] = np.maximum(floor, best_s[rows[full], k - 1])


def _rows_topk(n: int, k: int, q: np.ndarray, c: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate triplets (query, neighbour, sim) → (N, k) arrays, best first, padded with -1 / -inf.

    One float64 sort key ``q + (1 - s) / 4`` (the fraction is < 1, so rows stay apart) instead of a two-key
    lexsort: ~4x faster on tens of millions of candidates.
    """
    idx = np.full((n, k), -1, np.int32)
    sims = np.full((n, k), -np.inf, np.float32)
    if q.size == 0:
        return idx, sims
    o = np.argsort(q.astype(np.float64) + (1.0 - s.astype(np.float64)) * 0.25)
    q, c, s = q[o].astype(np.int64), c[o], s[o]
    start = np.searchsorted(q, np.arange(n))
    rank = np.arange(q.size) - start[q]
    keep = rank < k
    idx[q[keep], rank[keep]] = c[keep]
    sims[q[keep], rank[keep]] = s[keep]
    return idx, sims


def neighbour_graph(X: np.ndarray, k: int, floor: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """kNN graph for clustering: exact up to :data:`EXACT_KNN_MAX` faces, IVF above (see module docstring).

    ``floor`` only applies to the IVF path (neighbours below it are not kept); the exact path returns the
    true k nearest, whatever their similarity.
    """
    if X.shape[0] <= EXACT_KNN_MAX:
        return knn_graph(X, k)
    return ivf_knn_graph(X, k, floor=floor, seed=seed)


def _edge_list(indices: np.ndarray, sims: np.ndarray, threshold: float | None, groups: np.ndarray | None = None):
    n, k = indices.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = np.asarray(indices, dtype=np.int64).ravel()
    w = np.asarray(sims, dtype=np.float32).ravel()
    keep = (cols >= 0) & (cols != rows) & np.isfinite(w)
    if threshold is not None:
        keep &= w >= threshold
    if groups is not None:
        keep &= groups[rows] != groups[np.where(cols >= 0, cols, 0)]
    return rows[keep], cols[keep], w[keep]


def _similarity_graph(indices, sims, threshold, groups=None) -> sparse.csr_matrix:
    """Symmetric CSR of edges with similarity >= threshold (union of both kNN directions), no self loops.

    Weights are shifted by +2 while symmetrising so that ``maximum`` (which treats absent entries as 0)
    never drops a legitimately zero or negative similarity.
    """
    n = indices.shape[0]
    r, c, w = _edge_list(indices, sims, threshold, groups)
    A = sparse.csr_matrix((w.astype(np.float64) + 2.0, (r, c)), shape=(n, n))
    A = A.maximum(A.T).tocsr()
    A.data -= 2.0
    A.sort_indices()
    return A


def _distance_graph(indices, sims, threshold=None, groups=None) -> sparse.csr_matrix:
    """Symmetric CSR of cosine distances 1 - sim, clipped to >= 1e-6 so no stored entry is an implicit zero."""
    n = indices.shape[0]
    r, c, w = _edge_list(indices, sims, threshold, groups)
    d = np.clip(1.0 - w.astype(np.float64), 1e-6, 2.0)
    D = sparse.csr_matrix((d, (r, c)), shape=(n, n))
    D = D.maximum(D.T).tocsr()
    D.sort_indices()
    return D


# ---------------------------------------------------------------------------------------------------------
# graph clustering
# ---------------------------------------------------------------------------------------------------------
def _compact(labels: np.ndarray) -> np.ndarray:
    """Relabel non-negative labels 0..K-1 in order of first appearance; keep -1."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(labels.shape, -1, np.int64)
    pos = labels >= 0
    if pos.any():
        u, first, inv = np.unique(labels[pos], return_index=True, return_inverse=True)
        rank = np.empty(u.size, np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(u.size)
        out[pos] = rank[inv]
    return out


def connected_components_labels(indices: np.ndarray, sims: np.ndarray, threshold: float) -> np.ndarray:
    """Connected components of the graph of kNN edges with similarity >= threshold.

    Every face gets a label (an isolated face is its own component), 0..K-1 in order of first appearance.
    Kept as a reference: it is what single-linkage / DBSCAN(min_samples=2) amount to, and it chains people.
    """
    A = _similarity_graph(np.asarray(indices), np.asarray(sims), threshold)
    return _compact(csgraph.connected_components(A, directed=False)[1])


def _chinese_whispers_csr(A: sparse.csr_matrix, iterations: int, seed: int) -> np.ndarray:
    """Weighted Chinese Whispers (Biemann 2006) on a symmetric CSR graph; returns labels (not compacted).

    Classic CW updates nodes one at a time in random order. A Python loop over 200k nodes is too slow, and a
    fully synchronous numpy update oscillates (two neighbours swap labels forever), so nodes are updated in
    up to 32 random batches per sweep: each batch sees the labels written by the batches before it, which
    behaves like the sequential algorithm while staying vectorised. A node takes the label with the largest
    summed edge weight among its neighbours; ties keep the current label, else the smallest label, so the
    result is a pure function of the graph and ``seed``. Sweeps stop when nothing changes or after
    ``iterations``.
    """
    n = A.shape[0]
    labels = np.arange(n, dtype=np.int64)
    indptr = A.indptr
    nbr = A.indices.astype(np.int64)
    w = A.data.astype(np.float64)
    deg = np.diff(indptr)
    active = np.flatnonzero(deg)
    if active.size == 0:
        return labels
    row = np.repeat(np.arange(n, dtype=np.int64), deg)
    rng = np.random.default_rng(seed)
    nb = int(min(32, active.size))
    batch_of = np.empty(n, np.int64)
    for _ in range(max(1, int(iterations))):
        order = rng.permutation(active)
        batch_of[order] = np.arange(order.size) * nb // order.size
        eb = batch_of[row]
        e_order = np.argsort(eb, kind="stable")
        bounds = np.searchsorted(eb[e_order], np.arange(nb + 1))
        changed = 0
        for b in range(nb):
            e = e_order[bounds[b] : bounds[b + 1]]
            if e.size == 0:
                continue
            key = row[e] * n + labels[nbr[e]]
            uk, inv = np.unique(key, return_inverse=True)
            score = np.bincount(inv.ravel(), weights=w[e], minlength=uk.size)
            ur, ul = uk // n, uk % n
            starts = np.flatnonzero(np.r_[True, ur[1:] != ur[:-1]])
            seg = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, ur.size]))
            best = np.maximum.reduceat(score, starts)
            is_max = score >= best[seg] * (1 - 1e-9) - 1e-12
            nodes = ur[starts]
            keep_cur = np.zeros(starts.size, bool)
            keep_cur[seg[is_max & (ul == labels[ur])]] = True
            mx = np.flatnonzero(is_max)
            first_mx = mx[np.r_[True, seg[mx][1:] != seg[mx][:-1]]]  # smallest label among the maxima
            new = np.where(keep_cur, labels[nodes], ul[first_mx])
            changed += int(np.count_nonzero(new != labels[nodes]))
            labels[nodes] = new
        if changed == 0:
            break
    return labels


def chinese_whispers(indices: np.ndarray, sims: np.ndarray, threshold: float, iterations: int = 20, seed: int = 0) -> np.ndarray:
    """Chinese Whispers on the kNN edges with similarity >= threshold, weighted by similarity.

    Every face gets a label (isolated faces are singletons), 0..K-1 in order of first appearance.
    See :func:`_chinese_whispers_csr` for the update rule and determinism.
    """
    A = _similarity_graph(np.asarray(indices), np.asarray(sims), threshold)
    return _compact(_chinese_whispers_csr(A, iterations, seed))


# ---------------------------------------------------------------------------------------------------------
# average linkage
# ---------------------------------------------------------------------------------------------------------
def _average_linkage(X: np.ndarray, A: sparse.csr_matrix, threshold: float, dense_max: int = 2000) -> np.ndarray:
    """Average-linkage clustering cut at similarity ``threshold`` (distance 1 - threshold), scalable.

    Two clusters can only reach average similarity >= threshold if at least one of their pairs does, so
    clusters never span connected components of the threshold graph ``A``. Each component is therefore done
    alone: singletons and pairs directly, components up to ``dense_max`` faces by exact (dense) scipy
    average linkage, bigger ones by :func:`_sparse_average_linkage`.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    ncomp, comp = csgraph.connected_components(A, directed=False)
    labels = comp.astype(np.int64).copy()  # components of size 1-2 are already final
    sizes = np.bincount(comp, minlength=ncomp)
    order = np.argsort(comp, kind="stable")
    starts = np.r_[0, np.cumsum(sizes)]
    next_label = ncomp
    for c in np.flatnonzero(sizes >= 3):
        idx = order[starts[c] : starts[c + 1]]
        if idx.size <= dense_max:
            Xc = X[idx].astype(np.float64)
            Dm = np.clip(1.0 - Xc @ Xc.T, 0.0, 2.0)
            np.fill_diagonal(Dm, 0.0)
            Z = linkage(squareform(Dm, checks=False), method="average")
            sub = fcluster(Z, t=1.0 - threshold, criterion="distance") - 1
        else:
            sub = _sparse_average_linkage(X[idx], A[idx][:, idx].tocsr(), threshold)
        sub = _compact(sub)
        labels[idx] = np.where(sub == 0, c, next_label + sub - 1)
        next_label += int(sub.max())
    return labels


def _sparse_average_linkage(X: np.ndarray, A: sparse.csr_matrix, threshold: float) -> np.ndarray:
    """Exact average linkage restricted to merges along graph edges, for components too big for O(m^2).

    For unit vectors the mean pairwise similarity of clusters P and Q equals ``sum_P . sum_Q / (|P||Q|)``,
    so the linkage value is exact from per-cluster sum vectors; only the *candidate* merges are limited to
    clusters joined by at least one kNN edge (the dense version may also merge clusters whose strong pairs
    the kNN graph did not keep). Best pair first via a heap with lazy deletion (version stamps).
    """
    m = X.shape[0]
    sums = np.array(X, dtype=np.float32)  # float32: a 100k-face component would need 400 MB in float64
    size = np.ones(m)
    version = np.zeros(m, np.int64)
    parent = np.arange(m)
    adj: list[set | None] = [set(A.indices[A.indptr[i] : A.indptr[i + 1]].tolist()) - {i} for i in range(m)]
    coo = sparse.triu(A, k=1).tocoo()
    heap = [(-float(s), int(i), int(j), 0, 0) for i, j, s in zip(coo.row, coo.col, coo.data) if s >= threshold]
    heapq.heapify(heap)
    while heap:
        negs, a, b, va, vb = heapq.heappop(heap)
        if -negs < threshold:
            break
        if version[a] != va or version[b] != vb or adj[a] is None or adj[b] is None:
            continue
        if len(adj[a]) < len(adj[b]):
            a, b = b, a
        sums[a] += sums[b]
        size[a] += size[b]
        parent[b] = a
        version[a] += 1
        nb_b = adj[b]
        adj[b] = None
        adj[a] |= nb_b
        adj[a].discard(a)
        adj[a].discard(b)
        for x in nb_b:
            if x != a:
                adj[x].discard(b)
                adj[x].add(a)
        if adj[a]:
            nbs = np.fromiter(adj[a], np.int64, len(adj[a]))
            link = (sums[nbs] @ sums[a]).astype(np.float64) / (size[nbs] * size[a])
            for x, s in zip(nbs[link >= threshold].tolist(), link[link >= threshold].tolist()):
                i, j = (a, x) if a < x else (x, a)
                heapq.heappush(heap, (-s, i, j, int(version[i]), int(version[j])))
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            return parent
        parent = nxt


# ---------------------------------------------------------------------------------------------------------
# same-photo constraint and finishing
# ---------------------------------------------------------------------------------------------------------
def _split_incoherent(labels: np.ndarray, X: np.ndarray, A: sparse.csr_matrix, min_mean: float, split_at: float) -> np.ndarray:
    """Re-cluster, by average linkage at ``split_at``, every cluster whose mean pairwise similarity < ``min_mean``.

    Chinese Whispers only sees local votes, so in a crowded region of embedding space (many look-alike
    strangers, or the blurry/small faces that models map close together) it can grow one cluster out of
    hundreds of people chained by individually plausible edges. Such a cluster gives itself away by its
    mean pairwise similarity ``(|sum|^2 - n) / (n (n - 1))``: ~0.1-0.25 for a chain of strangers, >= 0.3
    for every real person seen so far (dev set min 0.30, typical 0.5). Only the failing clusters are
    touched, so the common case costs one pass over the labels.
    """
    labels = labels.copy()
    pos = np.flatnonzero(labels >= 0)
    if pos.size == 0:
        return labels
    lab_u, inv, cnt = np.unique(labels[pos], return_inverse=True, return_counts=True)
    inv = inv.ravel()
    big = cnt >= 3
    if not big.any():
        return labels
    M = sparse.csr_matrix((np.ones(pos.size, np.float32), (inv, pos)), shape=(lab_u.size, X.shape[0]))
    sums = np.asarray(M @ X, dtype=np.float64)
    mean = (np.einsum("ij,ij->i", sums, sums) - cnt) / np.maximum(cnt * (cnt - 1.0), 1.0)
    bad = lab_u[big & (mean < min_mean)]
    if bad.size == 0:
        return labels
    next_label = int(labels.max()) + 1
    for c in bad:
        idx = np.flatnonzero(labels == c)
        sub = _compact(_average_linkage(X[idx], A[idx][:, idx].tocsr(), split_at))
        labels[idx] = np.where(sub == 0, c, next_label + sub - 1)
        next_label += int(sub.max())
    return labels


def _split_group_conflicts(labels: np.ndarray, X: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Split every cluster that holds two faces of one photo so that no cluster does.

    Inside an offending cluster, faces are visited from most to least central (similarity to the cluster
    mean). Each face joins the sub-cluster it is most similar to on average (``x . mean``) among those that
    hold no face of its photo; if every sub-cluster already holds one, it starts a new sub-cluster. The most
    central face of each photo therefore stays with the core of the cluster and the other is moved to the
    sub-cluster it fits, e.g. a merged pair of look-alikes that appear together comes apart into two people.
    Sub-clusters that end up smaller than ``min_size`` become noise later. Clusters without a conflict are
    untouched, so the cost is proportional to the offending clusters only.
    """
    labels = labels.copy()
    pos = np.flatnonzero(labels >= 0)
    if pos.size == 0:
        return labels
    key = np.stack([labels[pos], groups[pos]], axis=1)
    _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    bad = np.unique(labels[pos[cnt[inv.ravel()] > 1]])
    if bad.size == 0:
        return labels
    next_label = int(labels.max()) + 1
    order = np.argsort(labels, kind="stable")
    sorted_l = labels[order]
    for c in bad:
        mem = order[np.searchsorted(sorted_l, c) : np.searchsorted(sorted_l, c, side="right")]
        Xm = X[mem].astype(np.float64)
        central = np.argsort(-(Xm @ Xm.sum(axis=0)), kind="stable")
        sub_sum: list[np.ndarray] = []
        sub_n: list[int] = []
        sub_groups: list[set] = []
        assign = np.empty(mem.size, np.int64)
        for t in central:
            g = groups[mem[t]]
            best, best_s = -1, -np.inf
            for s in range(len(sub_sum)):
                if g in sub_groups[s]:
                    continue
                v = float(Xm[t] @ sub_sum[s]) / sub_n[s]
                if v > best_s:
                    best, best_s = s, v
            if best < 0:
                sub_sum.append(Xm[t].copy())
                sub_n.append(1)
                sub_groups.append({g})
                best = len(sub_sum) - 1
            else:
                sub_sum[best] += Xm[t]
                sub_n[best] += 1
                sub_groups[best].add(g)
            assign[t] = best
        labels[mem] = np.where(assign == 0, c, next_label + assign - 1)
        next_label += len(sub_sum) - 1
    return labels


def _attach_noise(
    labels: np.ndarray, indices: np.ndarray, sims: np.ndarray, floor: float, margin: float, groups: np.ndarray | None
) -> np.ndarray:
    """Attach leftover noise faces to a cluster when the evidence for that one cluster is clear.

    Poor faces (blur, profile, small) score lower against *everything*, their own person included, so
    an absolute threshold leaves them out even when their neighbourhood is unambiguous. A noise face joins
    cluster C when (a) at least two of its kNN neighbours in C reach ``floor``, and (b) its best similarity
    to C beats its best similarity to any face outside C (among its neighbours >= ``floor``) by ``margin``. Requiring two corroborating
    links and a clear margin is what keeps strangers out: a stranger's occasional high impostor score
    is a single link and is not separated from its other scores. Clusters only grow, none merge, and the
    same-photo constraint is respected.
    """
    labels = labels.copy()
    noise = np.flatnonzero(labels < 0)
    if noise.size == 0 or indices.shape[1] == 0 or not (labels >= 0).any():
        return labels
    idx = indices[noise]
    s = sims[noise].astype(np.float64)
    valid = idx >= 0
    lab = np.where(valid, labels[np.where(valid, idx, 0)], -1)
    strong = valid & (lab >= 0) & (s >= floor)
    r, c = np.nonzero(strong)
    if r.size == 0:
        return labels
    K = int(labels.max()) + 1
    key = r * K + lab[r, c]
    uk, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    score = np.bincount(inv.ravel(), weights=s[r, c])
    ur, ul = uk // K, uk % K
    ok = cnt >= 2
    if groups is not None:
        # a cluster already holding a face of this photo is not a candidate
        pos = np.flatnonzero(labels >= 0)
        G = int(groups.max()) + 1 if groups.size else 1
        have = np.unique(labels[pos] * G + groups[pos]) if (groups >= 0).all() else None
        gq = groups[noise[ur]]
        if have is not None:
            ok &= ~np.isin(ul * G + gq, have)
        else:
            taken = {(int(a), int(b)) for a, b in zip(labels[pos], groups[pos])}
            ok &= np.array([(int(a), int(b)) not in taken for a, b in zip(ul, gq)], bool)
    if not ok.any():
        return labels
    ur, ul, score = ur[ok], ul[ok], score[ok]
    o = np.lexsort((ul, -score, ur))
    first = o[np.r_[True, ur[o][1:] != ur[o][:-1]]]
    rows, best = ur[first], ul[first]
    s_valid = np.where(valid, s, -np.inf)
    is_best = lab[rows] == best[:, None]
    inside = np.where(is_best, s_valid[rows], -np.inf).max(axis=1)
    outside = np.where(~is_best, s_valid[rows], -np.inf).max(axis=1)
    take = np.flatnonzero(inside - outside >= margin)
    if groups is not None and take.size > 1:
        # two faces of one photo may not both join the same cluster here either: keep the better one
        o = np.lexsort((-inside[take], groups[noise[rows[take]]], best[take]))
        t = take[o]
        dup = np.r_[False, (best[t][1:] == best[t][:-1]) & (groups[noise[rows[t]]][1:] == groups[noise[rows[t]]][:-1])]
        take = t[~dup]
    labels[noise[rows[take]]] = best[take]
    return labels


def _finish(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Clusters smaller than ``min_size`` → -1; the rest relabelled 0..K-1 by first appearance."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    pos = labels >= 0
    if pos.any():
        u, inv, cnt = np.unique(labels[pos], return_inverse=True, return_counts=True)
        small = cnt[inv.ravel()] < max(1, int(min_size))
        idx = np.flatnonzero(pos)
        labels[idx[small]] = -1
    return _compact(labels)


# ---------------------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------------------
def cluster_faces(
    X: np.ndarray,
    method: str = "graph",
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_size: int = 2,
    k: int = 15,
    groups: Sequence | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Cluster face embeddings; returns int64 labels (N,), -1 = noise.

    ``X`` is normalised here if it is not already. ``threshold`` is the cosine similarity that links two
    faces (graph; agglomerative cuts average linkage at distance ``1 - threshold``; dbscan uses
    ``eps = 1 - threshold``; hdbscan ignores it — it picks its own density levels above a fixed floor of
    :data:`HDBSCAN_FLOOR`). ``min_size`` is the smallest cluster kept. ``k`` is the neighbour count of the
    kNN graph every method runs on. ``groups`` (photo id per face, ``None`` = unconstrained) guarantees that
    no cluster holds two faces of the same photo (see :func:`_split_group_conflicts`).

    * ``graph`` — Chinese Whispers on the threshold kNN graph (default), then :func:`_split_incoherent` and
      :func:`_attach_noise` (see module docstring).
    * ``agglomerative`` — average linkage, per connected component (:func:`_average_linkage`).
    * ``hdbscan`` — ``sklearn.cluster.HDBSCAN`` on the sparse kNN distance matrix, min_cluster_size =
      max(2, min_size) (:func:`_hdbscan_knn`).
    * ``dbscan`` — ``sklearn.cluster.DBSCAN`` on the sparse radius graph (the k nearest within ``eps``),
      min_samples = min_size. Like connected components it chains people; kept for comparison.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    Xn = _normalise(X)
    n = Xn.shape[0]
    g = _group_codes(groups, n)
    if n == 0:
        return np.empty(0, np.int64)
    if n == 1:
        return np.array([0 if min_size <= 1 else -1], np.int64)
    # Edges below the floor are never used by the method, so the approximate (IVF) search may drop them.
    # The exact path drops them too, so that results do not change character at N = EXACT_KNN_MAX.
    floor = {"graph": threshold - ATTACH_DROP, "hdbscan": HDBSCAN_FLOOR}.get(method, threshold)
    indices, sims = neighbour_graph(Xn, k, floor=floor, seed=seed)
    below = sims < floor
    indices[below], sims[below] = -1, -np.inf

    if method == "graph":
        A = _similarity_graph(indices, sims, threshold, g)
        labels = _chinese_whispers_csr(A, iterations=20, seed=seed)
        labels = _split_incoherent(labels, Xn, A, threshold - COHESION_DROP, threshold - SPLIT_DROP)
    elif method == "agglomerative":
        A = _similarity_graph(indices, sims, threshold)
        labels = _average_linkage(Xn, A, threshold)
    elif method == "hdbscan":
        labels = _hdbscan_knn(indices, sims, max(2, int(min_size)), floor)
    else:  # dbscan
        from sklearn.cluster import DBSCAN

        D = _distance_graph(indices, sims, threshold)
        labels = DBSCAN(eps=1.0 - threshold, min_samples=max(1, int(min_size)), metric="precomputed").fit_predict(D)

    labels = np.asarray(labels, dtype=np.int64)
    if g is not None:
        labels = _split_group_conflicts(labels, Xn, g)
    labels = _finish(labels, min_size)
    if method == "graph":
        labels = _compact(_attach_noise(labels, indices, sims, threshold - ATTACH_DROP, ATTACH_MARGIN, g))
    return labels


def _hdbscan_knn(indices: np.ndarray, sims: np.ndarray, min_cluster_size: int, floor: float = HDBSCAN_FLOOR) -> np.ndarray:
    """sklearn HDBSCAN on the symmetric sparse kNN distance graph.

    Only neighbours with similarity >= ``floor`` are given to HDBSCAN. sklearn's sparse path refuses rows with
    fewer than ``min_samples`` stored distances and graphs with more than one connected component: short
    rows are faces without a neighbourhood, made noise up front (see the peeling loop); components are chained
    by edges of distance 3 (above any cosine distance, <= 2), which only adds levels above every real merge,
    so they change no cluster. ``min_samples = min_cluster_size - 1`` because the graph does not store the
    point itself, which classic HDBSCAN counts.
    """
    from sklearn.cluster import HDBSCAN

    n = indices.shape[0]
    min_samples = max(1, min_cluster_size - 1)
    labels = np.full(n, -1, np.int64)
    if n <= min_samples:
        return labels
    D = _distance_graph(indices, sims, floor)
    # A face with fewer than min_samples neighbours at similarity >= floor has no neighbourhood that could be
    # a person, so it is noise without asking HDBSCAN. Otherwise HDBSCAN, which has no absolute scale, pairs
    # up unrelated strangers at similarity ~0 when min_cluster_size is 2. Removing faces can leave others
    # short, hence the peeling loop (a k-core).
    keep = np.ones(n, bool)
    while True:
        short = keep & (np.diff(D.indptr) < min_samples)
        if not short.any():
            break
        keep &= ~short
        D = _drop_nodes(D, keep)
    sub = np.flatnonzero(keep)
    if sub.size <= min_samples:
        return labels
    D = D[sub][:, sub].tocsr()
    D.sort_indices()
    n = sub.size
    ncomp, comp = csgraph.connected_components(D, directed=False)
    if ncomp > 1:
        _, reps = np.unique(comp, return_index=True)
        r, c = reps[:-1], reps[1:]
        bridge = sparse.csr_matrix((np.full(2 * r.size, 3.0), (np.r_[r, c], np.r_[c, r])), shape=(n, n))
        D = (D + bridge).tocsr()
        D.sort_indices()
    model = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, metric="precomputed", copy=False)
    labels[sub] = model.fit_predict(D)
    return labels


def _drop_nodes(D: sparse.csr_matrix, keep: np.ndarray) -> sparse.csr_matrix:
    """Zero out (remove) every stored entry touching a node not in ``keep``; shape unchanged."""
    coo = D.tocoo()
    m = keep[coo.row] & keep[coo.col]
    return sparse.csr_matrix((coo.data[m], (coo.row[m], coo.col[m])), shape=D.shape)


# ---------------------------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------------------------
def immich_cluster(X: np.ndarray, max_distance: float = 0.5, min_faces: int = 3) -> np.ndarray:
    """Immich's face clustering (server ``PersonService.handleRecognizeFaces``), as a baseline.

    Mirrors Immich: faces are visited in order; ``matches`` = faces within cosine distance ``max_distance``
    (the face itself included). A face matching only itself is skipped for good (noise). A face with
    ``matches >= min_faces`` is *core*: it joins the person of its nearest already-assigned face within
    ``max_distance``, or starts a new person. Other faces are *deferred* to a second pass after all core
    faces, where they join the nearest assigned face within ``max_distance`` or stay unassigned.

    Simplified: Immich's job queue runs in parallel and its vector index (approximate) is queried live;
    here processing is sequential in index order and search uses a precomputed list of the 64 nearest faces
    (exact up to :data:`EXACT_KNN_MAX` faces, IVF above — Immich's index is approximate too), widened to an
    exact scan when all 64 are inside the radius and none is assigned yet. Immich's default settings
    (``maxDistance`` 0.5, ``minFaces`` 3) are the defaults here.
    """
    Xn = _normalise(X)
    n = Xn.shape[0]
    labels = np.full(n, -1, np.int64)
    if n == 0:
        return labels
    min_sim = 1.0 - max_distance
    kk = int(min(n - 1, max(min_faces, 64)))
    idx, sims = knn_graph(Xn, kk) if n <= EXACT_KNN_MAX else ivf_knn_graph(Xn, kk, floor=min_sim)
    within = (sims >= min_sim) & (idx >= 0)
    count = 1 + within.sum(axis=1)  # the face itself is a match
    next_person = 0

    def nearest_assigned(i: int) -> int:
        row = idx[i][within[i]]
        lab = labels[row]
        hit = np.flatnonzero(lab >= 0)
        if hit.size:
            return int(lab[hit[0]])
        if within[i].all() and kk < n - 1:  # radius may hold more faces than the kNN list: exact scan
            s = Xn @ Xn[i]
            s[i] = -np.inf
            s[labels < 0] = -np.inf
            j = int(np.argmax(s))
            if s[j] >= min_sim:
                return int(labels[j])
        return -1

    deferred = []
    for i in range(n):
        if min_faces > 1 and count[i] <= 1:
            continue
        if count[i] < min_faces:
            deferred.append(i)
            continue
        p = nearest_assigned(i)
        if p < 0:
            p = next_person
            next_person += 1
        labels[i] = p
    for i in deferred:
        labels[i] = nearest_assigned(i)
    return _compact(labels)


def hdbscan_baseline(X: np.ndarray, min_cluster_size: int = 3) -> np.ndarray:
    """The original pipeline's clustering: exact ``hdbscan.HDBSCAN`` (euclidean on unit vectors) in 512-d.

    Euclidean distance on unit vectors is monotone in cosine (d^2 = 2 - 2 cos). Exact HDBSCAN in 512-d has no
    useful spatial index, so it is ~O(N^2): measured 272 s at 20k faces. Kept to show what we replaced.
    """
    import hdbscan

    Xn = _normalise(X)
    if Xn.shape[0] < max(2, min_cluster_size):
        return np.full(Xn.shape[0], -1, np.int64)
    return np.asarray(hdbscan.HDBSCAN(min_cluster_size=min_cluster_size).fit_predict(Xn), dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------
# incremental assignment and stable ids
# ---------------------------------------------------------------------------------------------------------
def assign_to_clusters(X_new: np.ndarray, X_old: np.ndarray, old_labels: np.ndarray, threshold: float, k: int = 1) -> np.ndarray:
    """Label new faces from existing clusters without re-clustering; -1 where nothing is close enough.

    With ``k=1`` (default) a new face takes the cluster of its most similar clustered old face if that
    similarity is >= ``threshold``. With ``k>1`` the clusters of its ``k`` most similar old faces at or
    above threshold vote with their similarities (a guard against one mislabelled old face). Exact
    search in blocks of new faces: 1,000 x 100,000 x 512 is ~0.1 TFLOP, about 1 s on two cores, so no
    index is needed at this scale. Old faces with label < 0 are ignored.
    """
    Xn = _normalise(X_new)
    Xo = _normalise(X_old)
    old_labels = np.asarray(old_labels, dtype=np.int64)
    if Xo.shape[0] != old_labels.shape[0]:
        raise ValueError("X_old and old_labels differ in length")
    n = Xn.shape[0]
    out = np.full(n, -1, np.int64)
    noise = np.flatnonzero(old_labels < 0)
    if n == 0 or noise.size == Xo.shape[0]:
        return out
    b = max(1, _BLOCK_ELEMS // max(Xo.shape[0], 1))
    for i0 in range(0, n, b):
        S = Xn[i0 : i0 + b] @ Xo.T
        if noise.size:
            S[:, noise] = -np.inf
        if k <= 1:
            j = np.argmax(S, axis=1)
            s = S[np.arange(S.shape[0]), j]
            out[i0 : i0 + b] = np.where(s >= threshold, old_labels[j], -1)
            continue
        r, c = np.nonzero(S >= threshold)
        if r.size == 0:
            continue
        s = S[r, c]
        o = np.lexsort((-s, r))  # by row, best first
        r, c, s = r[o], c[o], s[o]
        start = np.searchsorted(r, r, side="left")
        keep = (np.arange(r.size) - start) < k
        r, lab, s = r[keep], old_labels[c[keep]], s[keep].astype(np.float64)
        K = int(old_labels.max()) + 1
        uk, inv = np.unique(r * K + lab, return_inverse=True)
        score = np.bincount(inv.ravel(), weights=s)
        ur, ul = uk // K, uk % K
        o = np.lexsort((ul, -score, ur))
        first = o[np.r_[True, ur[o][1:] != ur[o][:-1]]]
        out[i0 + ur[first]] = ul[first]
    return out


_CLUSTER_ID = re.compile(r"^unknown_cluster_(\d+)$")


def stable_cluster_ids(
    previous: dict[str, str], labels: np.ndarray, face_ids: Sequence[str], next_number: int
) -> tuple[dict[str, str], int]:
    """Carry cluster ids across re-clusterings so that a cluster a user has seen keeps its name.

    ``previous`` maps face id → old cluster id (``unknown_cluster_N``); ids of the form ``unknown_noise_*``
    are ignored (a noise face is not a cluster). Returns face id → cluster id for every face with
    label >= 0, and the next free number.

    Matching rule: a new cluster C may inherit old id O only if O accounts for at least half of C's faces
    that had any old id (new faces do not count against it — a cluster that grows keeps its name). Among
    admissible pairs, a maximum-overlap one-to-one matching is taken (Hungarian, per connected block of
    the overlap graph so the matrix stays small at 200k faces). Consequences: a cluster that gains or
    loses a few faces keeps its id; when a cluster splits, the part with most of its old faces keeps the
    id; when two merge, the larger keeps its id. Unmatched clusters get ``unknown_cluster_{next_number}``
    in a canonical order (largest first, then smallest face id), so results do not depend on the input
    order. ``next_number`` is also raised past any number already used in ``previous``.
    """
    from scipy.optimize import linear_sum_assignment

    labels = np.asarray(labels, dtype=np.int64)
    face_ids = [str(f) for f in face_ids]
    if len(face_ids) != labels.shape[0]:
        raise ValueError("labels and face_ids differ in length")
    used = [int(m.group(1)) for v in previous.values() if (m := _CLUSTER_ID.match(str(v)))]
    next_number = max(int(next_number), max(used) + 1 if used else 0)

    members: dict[int, list[str]] = {}
    for f, lab in zip(face_ids, labels.tolist()):
        if lab >= 0:
            members.setdefault(lab, []).append(f)
    # canonical cluster order: independent of label values and face order
    clusters = sorted((sorted(m) for m in members.values()), key=lambda m: (-len(m), m[0]))

    overlap: dict[tuple[int, str], int] = {}
    known = np.zeros(len(clusters), np.int64)
    for ci, mem in enumerate(clusters):
        for f in mem:
            old = previous.get(f)
            if old is None or str(old).startswith("unknown_noise_"):
                continue
            known[ci] += 1
            overlap[(ci, old)] = overlap.get((ci, old), 0) + 1
    edges = [(ci, old, ov) for (ci, old), ov in overlap.items() if 2 * ov >= known[ci]]

    name: dict[int, str] = {}
    if edges:
        olds = sorted({o for _, o, _ in edges})
        o_index = {o: i for i, o in enumerate(olds)}
        nc = len(clusters)
        ei = np.array([c for c, _, _ in edges])
        ej = np.array([o_index[o] for _, o, _ in edges])
        ew = np.array([w for _, _, w in edges], np.float64)
        B = sparse.coo_matrix((np.ones(ei.size), (ei, nc + ej)), shape=(nc + len(olds),) * 2)
        _, comp = csgraph.connected_components(B, directed=False)
        for cc in np.unique(comp[ei]):
            sel = comp[ei] == cc
            rows, rinv = np.unique(ei[sel], return_inverse=True)
            cols, cinv = np.unique(ej[sel], return_inverse=True)
            W = np.zeros((rows.size, cols.size))
            W[rinv.ravel(), cinv.ravel()] = ew[sel]
            ri, cj = linear_sum_assignment(W, maximize=True)
            for a, b in zip(ri, cj):
                if W[a, b] > 0:
                    name[int(rows[a])] = olds[int(cols[b])]
    out: dict[str, str] = {}
    for ci, mem in enumerate(clusters):
        cid = name.get(ci)
        if cid is None:
            cid = f"unknown_cluster_{next_number}"
            next_number += 1
        for f in mem:
            out[f] = cid
    return out, next_number
