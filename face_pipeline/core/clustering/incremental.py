"""Unknown faces already clustered: new faces joining existing clusters, and cluster ids kept stable across runs."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from face_pipeline.core import face_state
from face_pipeline.core.clustering.neighbours import _BLOCK_ELEMS, _normalise

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
    used = [n for v in previous.values() if (n := face_state.unknown_cluster_number(str(v))) is not None]
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
            if old is None or face_state.is_noise(str(old)):
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
            cid = face_state.unknown_cluster_id(next_number)
            next_number += 1
        for f in mem:
            out[f] = cid
    return out, next_number
