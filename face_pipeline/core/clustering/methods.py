"""Clustering methods on the neighbour graph, the constraint splits that finish every method, and the REGISTRY.

Adding a method = one function with the signature of :data:`MethodFn` plus one :data:`REGISTRY` entry; the
settings' ``unknown_method`` choices, the CLI's ``--unknown-method`` help and :func:`cluster.cluster_faces`
all read the registry.

Constraints every method's result obeys (:func:`apply_cannot_links`): two faces of one photo are two people,
and so are two faces a person answered "different people" for. Must-links (a person answered "same person")
are edges of full weight added before the method runs.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from face_pipeline.core.clustering.neighbours import _distance_graph, _similarity_graph

#: Noise rescue for the refined graph method (:func:`_attach_noise`): floor = threshold - ATTACH_DROP, margin.
ATTACH_DROP = 0.1
ATTACH_MARGIN = 0.1
#: Noise rescue after Chinese Whispers: a face left alone joins a group when two of its links into that group
#: reach threshold - CW_ATTACH_DROP (0.35 at the default link) and its best link there beats any link elsewhere
#: by ATTACH_MARGIN. Measured on both sets, nobody named (bench/quality.py's embeddings): at 0.35 it brings back a
#: person's weaker photos (faces_dev B³ F 0.980 → 0.985, lfw_dev 0.9826 → 0.9829, no stranger more); at 0.30,
#: barely above the impostor bar (0.28), lfw_dev's one-photo people are attached to look-alikes (B³ F −0.005).
CW_ATTACH_DROP = 0.05
#: Graph clusters with mean pairwise similarity < threshold - COHESION_DROP are re-split by average linkage
#: at threshold - SPLIT_DROP (:func:`_split_incoherent`).
COHESION_DROP = 0.15
SPLIT_DROP = 0.0
#: HDBSCAN sees only neighbours with similarity >= this; a face whose min_samples-th neighbour is below it
#: (cosine distance > 0.7, far outside any person) is noise without asking HDBSCAN.
HDBSCAN_FLOOR = 0.3


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


def _split_group_conflicts(labels: np.ndarray, X: np.ndarray, groups: np.ndarray | None, cannot: dict[int, set[int]] | None = None) -> np.ndarray:
    """Split every cluster that holds two faces of one photo so that no cluster does.

    Inside an offending cluster, faces are visited from most to least central (similarity to the cluster
    mean). Each face joins the sub-cluster it is most similar to on average (``x . mean``) among those that
    hold no face of its photo; if every sub-cluster already holds one, it starts a new sub-cluster. The most
    central face of each photo therefore stays with the core of the cluster and the other is moved to the
    sub-cluster it fits, e.g. a merged pair of look-alikes that appear together comes apart into two people.
    Sub-clusters that end up smaller than ``min_size`` become noise later. Clusters without a conflict are
    untouched, so the cost is proportional to the offending clusters only.
    
    ``cannot`` (face → faces it is not, from people's "different people" answers) is honoured the same way: a
    face never joins a sub-cluster holding one of its cannot-link partners. ``groups`` may be None then.
    """
    labels = labels.copy()
    pos = np.flatnonzero(labels >= 0)
    if pos.size == 0:
        return labels
    cannot = cannot or {}
    if groups is None:
        groups = -1 - np.arange(labels.size, dtype=np.int64)  # every face its own photo
    key = np.stack([labels[pos], groups[pos]], axis=1)
    _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    bad = set(np.unique(labels[pos[cnt[inv.ravel()] > 1]]).tolist())
    bad |= {int(labels[a]) for a, others in cannot.items() for b in others if labels[a] >= 0 and labels[a] == labels[b]}
    bad = np.array(sorted(bad), dtype=np.int64)
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
        sub_faces: list[set] = []
        assign = np.empty(mem.size, np.int64)
        for t in central:
            g = groups[mem[t]]
            partners = cannot.get(int(mem[t]), ())
            best, best_s = -1, -np.inf
            for s in range(len(sub_sum)):
                if g in sub_groups[s] or any(q in sub_faces[s] for q in partners):
                    continue
                v = float(Xm[t] @ sub_sum[s]) / sub_n[s]
                if v > best_s:
                    best, best_s = s, v
            if best < 0:
                sub_sum.append(Xm[t].copy())
                sub_n.append(1)
                sub_groups.append({g})
                sub_faces.append({int(mem[t])})
                best = len(sub_sum) - 1
            else:
                sub_sum[best] += Xm[t]
                sub_n[best] += 1
                sub_groups[best].add(g)
                sub_faces[best].add(int(mem[t]))
            assign[t] = best
        labels[mem] = np.where(assign == 0, c, next_label + assign - 1)
        next_label += len(sub_sum) - 1
    return labels


def _attach_noise(
    labels: np.ndarray, indices: np.ndarray, sims: np.ndarray, floor: float, margin: float, groups: np.ndarray | None,
    cannot: dict[int, set[int]] | None = None,
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
    if cannot:  # never into a group holding a face a person said is someone else
        take = np.array([t for t in take if not any(labels[q] == best[t] for q in cannot.get(int(noise[rows[t]]), ()))], dtype=np.int64)
    labels[noise[rows[take]]] = best[take]
    return labels


# ---------------------------------------------------------------------------------------------------------
# poor faces: placed by what their group as a whole says
# ---------------------------------------------------------------------------------------------------------
# The recogniser sees a poor face (tiny, blurred, cut by the frame, turned away: quality below the model's
# ``fine_link_quality``) less well, so its links to the person's other faces are weaker (lfw_dev subject faces:
# median cosine between two faces of one person 0.60 when both are good, 0.50 when one is poor), while the
# impostor range does not move with quality (p99.99 0.270-0.282 in every quality bin). Poor crops of one person
# also resemble each other (the same cut, the same blur), so a person's poor photos can form a group of their own
# that links to the person's good photos only at 0.4-0.6 on a few pairs, with a mean near the brothers' 0.30
# (faces_dev: Elton John's 5 tight crops beside his 16 other photos). A group of good faces that stays apart is
# evidence of someone else and is left alone (brothers stay two groups); a group made only of poor faces, or a poor
# face left alone, is evidence of nothing but poor photos, so they join the group the evidence points to.


def _photo_taken(labels: np.ndarray, graph: Graph) -> set[tuple[int, int]]:
    """(group, photo) pairs present: a group never takes a second face of a photo it already holds."""
    if graph.groups is None:
        return set()
    pos = np.flatnonzero(labels >= 0)
    return set(zip(labels[pos].tolist(), graph.groups[pos].tolist()))


def _members_of(labels: np.ndarray) -> Callable[[int], np.ndarray]:
    """``members(g)``: the rows of group ``g``, from one stable sort of the labels (no scan per group)."""
    order = np.argsort(labels, kind="stable")
    ordered = labels[order]
    return lambda g: order[np.searchsorted(ordered, g) : np.searchsorted(ordered, g, side="right")]


def _separated(rows: np.ndarray, members: np.ndarray, graph: Graph, taken: set, target: int) -> bool:
    """Whether a photo or a person's "different people" answer keeps ``rows`` out of group ``target``."""
    if graph.groups is not None and any((target, int(graph.groups[r])) in taken for r in rows):
        return True
    if graph.cannot:
        inside = set(members.tolist())
        return any(q in inside for r in rows for q in graph.cannot.get(int(r), ()))
    return False


def _join_poor_groups(labels: np.ndarray, graph: Graph, link: float, margin: float) -> np.ndarray:
    """A group made only of poor faces joins the one group holding good faces that two of its faces link to at
    ``link``, when its best link there beats every other link of its faces by ``margin``, and no photo or answer
    separates them. Groups holding a good face never move, and nothing joins a poor-only group, so no chain forms:
    one hop, decided on the groups as they stood."""
    pos = np.flatnonzero(labels >= 0)
    if pos.size == 0:
        return labels
    k = int(labels.max()) + 1
    good_in = np.bincount(labels[pos], weights=~graph.poor[pos], minlength=k)
    size = np.bincount(labels[pos], minlength=k)
    poor_groups = np.flatnonzero((size >= 2) & (good_in == 0))
    if poor_groups.size == 0:
        return labels
    taken = _photo_taken(labels, graph)
    members = _members_of(labels)
    joined: dict[int, list[np.ndarray]] = defaultdict(list)  # target -> the poor groups that joined it so far
    out = labels.copy()
    for g in poor_groups:
        rows = members(g)
        nb, s = graph.indices[rows], graph.sims[rows]
        lab = np.where(nb >= 0, labels[np.maximum(nb, 0)], -2)
        outside = (nb >= 0) & (lab != g)
        strong = outside & (lab >= 0) & (s >= link)
        reach: dict[int, set[int]] = defaultdict(set)  # group -> faces of g linking to it at the link
        for r, c in zip(*np.nonzero(strong)):
            reach[int(lab[r, c])].add(int(r))
        targets = [h for h, faces in reach.items() if len(faces) >= 2 and good_in[h] > 0]
        if len(targets) != 1:
            continue  # no group, or two (a relative's and the person's): the poor group stays a question
        h = targets[0]
        best_in = np.where(outside & (lab == h), s, -np.inf).max()
        best_else = np.where(outside & (lab != h), s, -np.inf).max()
        if best_in - best_else < margin or _separated(rows, np.concatenate([members(h), *joined[h]]), graph, taken, h):
            continue
        out[rows] = h
        joined[h].append(rows)
        if graph.groups is not None:
            taken.update((h, int(graph.groups[r])) for r in rows)
    return out


def _join_lone_poor_faces(labels: np.ndarray, graph: Graph, link: float, margin: float) -> np.ndarray:
    """A poor face in no group joins the group of its nearest face, if that group holds a good face and its mean
    face clears ``link`` for the poor face; its nearest link must beat every link outside that group by ``margin``,
    and no photo or answer may separate them. A poor face's single links are weak even to its own person; the mean
    of a group is a steadier witness (faces_dev: Madonna's poorest photo, quality 0.18, has one link above 0.3 to
    her 23 other photos and 0.40 to their mean face), and a relative's face, which reaches a group through its few
    nearest faces, is not claimed by the group as a whole. This runs after :func:`_join_poor_groups`, so a poor face
    may join a person through the crops that just joined them, judged against the whole group's mean face, which
    its good faces carry. Lone faces vouch for no other lone face: every group is scored as it stood before any
    of them joined."""
    lone = np.flatnonzero((labels < 0) & graph.poor)
    pos = np.flatnonzero(labels >= 0)
    if lone.size == 0 or pos.size == 0:
        return labels
    good_in = np.bincount(labels[pos], weights=~graph.poor[pos], minlength=int(labels.max()) + 1)
    taken = _photo_taken(labels, graph)
    members = _members_of(labels)
    rows, targets = [], []
    for i in lone:
        ok = graph.indices[i] >= 0
        if not ok.any():
            continue
        nb, s = graph.indices[i][ok], graph.sims[i][ok]
        j = int(np.argmax(s))
        g = int(labels[nb[j]])
        if g < 0 or good_in[g] == 0:
            continue  # alone, or nearest to a group of poor faces only, which is no one's evidence
        elsewhere = s[labels[nb] != g]
        if (elsewhere.size and s[j] - elsewhere.max() < margin) or _separated(np.array([i]), members(g), graph, taken, g):
            continue
        rows.append(int(i))
        targets.append(g)
    if not rows:
        return labels
    rows_a, targets_a = np.asarray(rows), np.asarray(targets)
    wanted, which = np.unique(targets_a, return_inverse=True)
    in_wanted = pos[np.isin(labels[pos], wanted)]
    member_of = sparse.csr_matrix((np.ones(in_wanted.size, np.float32), (np.searchsorted(wanted, labels[in_wanted]), np.arange(in_wanted.size))),
                                  shape=(wanted.size, in_wanted.size))
    means = np.asarray(member_of @ graph.X[in_wanted], dtype=np.float64)
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    score = np.einsum("ij,ij->i", graph.X[rows_a].astype(np.float64), means[which.ravel()])
    keep = np.flatnonzero(score >= link)
    if graph.groups is not None and keep.size > 1:
        # two faces of one photo may not both join one group here either: the better one does
        o = keep[np.lexsort((-score[keep], graph.groups[rows_a[keep]], targets_a[keep]))]
        dup = np.r_[False, (targets_a[o][1:] == targets_a[o][:-1]) & (graph.groups[rows_a[o]][1:] == graph.groups[rows_a[o]][:-1])]
        keep = o[~dup]
    out = labels.copy()
    for t in keep[np.argsort(-score[keep], kind="stable")]:  # best first; a "different people" answer holds among joiners too
        r, g = int(rows_a[t]), int(targets_a[t])
        if not any(out[q] == g for q in graph.cannot.get(r, ())):
            out[r] = g
    return out


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
# the methods and their registry
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Graph:
    """What a method gets: normalised faces, their kNN graph (below-floor entries already -1 / -inf), the photo
    codes (``None`` = unconstrained) and must-link pairs (people's "same person" answers)."""

    X: np.ndarray
    indices: np.ndarray
    sims: np.ndarray
    groups: np.ndarray | None
    must_link: np.ndarray  # (m, 2) int row pairs
    cannot: dict = field(default_factory=dict)  # row → rows a person said are someone else
    poor: np.ndarray | None = None  # bool per row: quality below the model's fine_link_quality (None = not known)

    def similarity(self, threshold: float, *, unweighted: bool = False, drop_same_photo: bool = True) -> sparse.csr_matrix:
        """Symmetric graph of the kNN edges >= ``threshold`` plus the must-links (weight 1), same-photo edges
        removed (two faces of one photo are two people)."""
        A = _similarity_graph(self.indices, self.sims, threshold, self.groups if drop_same_photo else None)
        if len(self.must_link):
            n = A.shape[0]
            r, c = self.must_link[:, 0], self.must_link[:, 1]
            M = sparse.csr_matrix((np.full(2 * r.size, 3.0), (np.r_[r, c], np.r_[c, r])), shape=(n, n))
            A = A.maximum(M).tocsr()
            A.data = np.minimum(A.data, 1.0)
        if unweighted:
            A = A.copy()
            A.data = np.ones_like(A.data)
        A.sort_indices()
        return A


MethodFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Method:
    """One registry entry: ``fn(graph, threshold=, min_size=, seed=, **params) -> labels``, the neighbour
    count ``k`` its graph needs, the similarity below which it never looks (``floor(threshold)``), and why."""

    fn: MethodFn
    k: int
    floor: Callable[[float], float]
    summary: str
    params: dict = field(default_factory=dict)


def chinese_whispers_method(graph: Graph, *, threshold: float, min_size: int, seed: int, iterations: int = 100) -> np.ndarray:
    """Chinese Whispers as dlib runs it (Biemann 2006; dlib's ``chinese_whispers``): unweighted edges between
    faces more similar than ``threshold``, every face takes the label most of its neighbours hold.

    Unweighted on purpose: with weights, a few very similar look-alike pairs outvote the many moderate edges
    inside each person; counting neighbours asks "how many of my near faces agree", which is what separates a
    person from a chain of look-alikes. On lfw_dev (2,940 people, nobody named) it beats the weighted variant
    with its split/attach refinements (bench/quality.py). After the constraint splits and the size filter,
    faces left alone may join a group they clearly belong to (:data:`CW_ATTACH_DROP`, :func:`_attach_noise`).
    """
    A = graph.similarity(threshold, unweighted=True)
    return _chinese_whispers_csr(A, iterations=iterations, seed=seed)


def refined_graph_method(graph: Graph, *, threshold: float, min_size: int, seed: int) -> np.ndarray:
    """The former default: weighted Chinese Whispers, then :func:`_split_incoherent` (re-split clusters whose
    mean similarity is too low for one person) and, after the constraint splits, :func:`_attach_noise`.
    Kept for comparison: its refinements were chosen on faces_dev and lose to plain Chinese Whispers on lfw_dev."""
    A = graph.similarity(threshold)
    labels = _chinese_whispers_csr(A, iterations=20, seed=seed)
    return _split_incoherent(labels, graph.X, A, threshold - COHESION_DROP, threshold - SPLIT_DROP)


def _refined_graph_after(labels: np.ndarray, graph: Graph, threshold: float) -> np.ndarray:
    return _compact(_attach_noise(labels, graph.indices, graph.sims, threshold - ATTACH_DROP, ATTACH_MARGIN, graph.groups, graph.cannot))


def _chinese_whispers_after(labels: np.ndarray, graph: Graph, threshold: float) -> np.ndarray:
    labels = _attach_noise(labels, graph.indices, graph.sims, threshold - CW_ATTACH_DROP, ATTACH_MARGIN, graph.groups, graph.cannot)
    if graph.poor is not None and graph.poor.any():
        labels = _join_lone_poor_faces(_join_poor_groups(labels, graph, threshold, ATTACH_MARGIN), graph, threshold, ATTACH_MARGIN)
    return _compact(labels)


def average_linkage_method(graph: Graph, *, threshold: float, min_size: int, seed: int) -> np.ndarray:
    """Average linkage cut at cosine distance ``1 - threshold``, per connected component (:func:`_average_linkage`)."""
    return _average_linkage(graph.X, graph.similarity(threshold, drop_same_photo=False), threshold)


def hdbscan_method(graph: Graph, *, threshold: float, min_size: int, seed: int) -> np.ndarray:
    """``sklearn.cluster.HDBSCAN`` on the sparse kNN distance graph, min_cluster_size = max(2, min_size);
    ignores ``threshold`` (it picks its own density levels above :data:`HDBSCAN_FLOOR`)."""
    return _hdbscan_knn(graph.indices, graph.sims, max(2, int(min_size)), HDBSCAN_FLOOR)


def dbscan_method(graph: Graph, *, threshold: float, min_size: int, seed: int) -> np.ndarray:
    """``sklearn.cluster.DBSCAN`` on the radius graph (eps = 1 - threshold). Chains people like connected
    components; kept for comparison."""
    from sklearn.cluster import DBSCAN

    D = _distance_graph(graph.indices, graph.sims, threshold)
    return DBSCAN(eps=1.0 - threshold, min_samples=max(1, int(min_size)), metric="precomputed").fit_predict(D)


#: name → method. The first entry is the default of ``Settings.unknown_method``.
REGISTRY: dict[str, Method] = {
    "chinese_whispers": Method(
        chinese_whispers_method, k=50, floor=lambda t: t - CW_ATTACH_DROP,
        summary="dlib's Chinese Whispers: unweighted kNN edges (k=50) above the threshold, then faces left alone "
        "join a group they clearly belong to (default)",
    ),
    "graph": Method(
        refined_graph_method, k=15, floor=lambda t: t - ATTACH_DROP,
        summary="weighted Chinese Whispers (k=15) + incoherent-cluster split + noise attach (former default)",
    ),
    "agglomerative": Method(average_linkage_method, k=50, floor=lambda t: t, summary="average linkage at distance 1 - threshold"),
    "hdbscan": Method(hdbscan_method, k=15, floor=lambda t: HDBSCAN_FLOOR, summary="HDBSCAN on the sparse kNN graph (ignores the threshold)"),
    "dbscan": Method(dbscan_method, k=15, floor=lambda t: t, summary="DBSCAN on the radius graph (chains people)"),
}
#: Steps a method needs after the constraint splits and the size filter (the noise rescue of each).
AFTER_FINISH: dict[str, Callable[[np.ndarray, Graph, float], np.ndarray]] = {
    "chinese_whispers": _chinese_whispers_after, "graph": _refined_graph_after,
}
