"""The nearest-neighbour graph every clustering method runs on: exact (blocked products) or IVF, and its edges.

Why a sparse k-nearest-neighbour graph: memory is O(N*k), not O(N^2). Up to :data:`EXACT_KNN_MAX` faces the
graph is exact (blocked matrix products); above, an inverted-file index (:func:`ivf_knn_graph`), because exact
search is O(N^2 * D): ~25 s of matrix products at 50k and ~400 s at 200k on two cores, against targets of 15 s
and 90 s. Neighbours below a floor that the method never uses are dropped on both paths.
"""

from __future__ import annotations

import math
from typing import Hashable, Sequence

import numpy as np
from scipy import sparse

#: Largest N for which :func:`neighbour_graph` builds the exact kNN graph; above it the IVF index is used.
#: Exact search costs ~1 s at 10k and grows as N^2; IVF loses a little quality (bench: graph-exact vs graph),
#: so the switch is made where exact search stops being cheap.
EXACT_KNN_MAX = 12_000

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


class NeighbourCache:
    """The kNN graph of one set of faces, computed once and shared by clusterings at different links.

    A full organise clusters the same faces up to three times (the evidence clustering at the link, the stricter
    one at :data:`naming.FINE_LINK`, the unknown clusters): the graph is most of that cost and does not depend on
    the link. A graph kept above floor ``f0`` answers any request with floor ``f1 >= f0`` exactly: the top ``k``
    at or above ``f1`` are the entries of the top ``k`` at or above ``f0`` that reach ``f1`` (the IVF path scans
    the same cells whatever the floor). Tied to one array: asking with another array is a programming error.
    """

    def __init__(self, X: np.ndarray) -> None:
        self.X = X
        self._graphs: dict[tuple[int, int], tuple[float, np.ndarray, np.ndarray]] = {}

    def graph(self, X: np.ndarray, k: int, floor: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Like :func:`neighbour_graph` (a copy the caller may modify)."""
        if X is not self.X and not (X.shape == self.X.shape and np.shares_memory(X, self.X)):
            raise ValueError("NeighbourCache asked about other faces than its own")
        hit = self._graphs.get((k, seed))
        if hit is None or hit[0] > floor:
            idx, sims = neighbour_graph(X, k, floor=floor, seed=seed)
            hit = self._graphs[(k, seed)] = (floor, idx, sims)
        return hit[1].copy(), hit[2].copy()


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
