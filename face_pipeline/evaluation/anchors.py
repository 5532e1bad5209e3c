"""The simple anchors the product is measured against, each as its product would run it on the same embeddings.

* Chinese Whispers as dlib runs it: unweighted kNN edges (k = 50) above cos 0.4 (and 0.5).
* Average linkage cut at cosine distance 0.6.
* HDBSCAN on a sparse 15-NN graph (min cluster size 3, min samples 3).
* Immich's algorithm (max distance 0.5, min 3 faces).

How their products apply a user's labels (:func:`name_clusters`): the user names clusters; a cluster holding
labelled faces takes a name only if all its labels are ONE person (the "only one person" rule, Immich-like:
naming a face cluster names every face in it); a cluster holding labels of two people is left unnamed except
for the labelled faces themselves. That is the most favourable reading for the anchors (majority voting would
only add wrong names).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import numpy as np

from face_pipeline.core.clustering.methods import (
    HDBSCAN_FLOOR,
    Graph,
    _average_linkage,
    _chinese_whispers_csr,
    _compact,
    _hdbscan_knn,
)
from face_pipeline.core.clustering.neighbours import EXACT_KNN_MAX, _normalise, ivf_knn_graph, knn_graph


def _graph(X: np.ndarray, k: int) -> Graph:
    Xn = _normalise(X)
    idx, sims = knn_graph(Xn, min(k, len(Xn) - 1))
    return Graph(Xn, idx, sims, None, np.zeros((0, 2), np.int64))


def chinese_whispers_anchor(X: np.ndarray, threshold: float = 0.4, k: int = 50, seed: int = 0) -> np.ndarray:
    """dlib's Chinese Whispers: unweighted edges to the k nearest faces with cosine > threshold, 100 sweeps."""
    g = _graph(X, k)
    return _compact(_chinese_whispers_csr(g.similarity(threshold, unweighted=True), iterations=100, seed=seed))


def average_linkage_anchor(X: np.ndarray, threshold: float = 0.4, k: int = 50) -> np.ndarray:
    g = _graph(X, k)
    return _compact(_average_linkage(g.X, g.similarity(threshold), threshold))


def hdbscan_anchor(X: np.ndarray, min_cluster_size: int = 3, k: int = 15) -> np.ndarray:
    g = _graph(X, k)
    return _compact(_hdbscan_knn(g.indices, g.sims, min_cluster_size, floor=HDBSCAN_FLOOR))


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


#: name → function(X) -> labels (-1 = noise), the rows of bench/quality.py.
ANCHORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "chinese whispers cos>0.4 (k=50)": lambda X: chinese_whispers_anchor(X, 0.4),
    "chinese whispers cos>0.5 (k=50)": lambda X: chinese_whispers_anchor(X, 0.5),
    "average linkage (dist 0.6)": lambda X: average_linkage_anchor(X, 0.4),
    "hdbscan (15-NN, min 3/3)": lambda X: hdbscan_anchor(X, 3),
    "immich (dist 0.5, min 3)": lambda X: immich_cluster(X, 0.5, 3),
}


def name_clusters(labels: np.ndarray, human: np.ndarray) -> np.ndarray:
    """Apply labels the way a clustering product does: ``human`` (N,) person index or -1 for the labelled
    faces; returns the person each face ends up with (-1 = none). A cluster whose labelled faces are all one
    person takes that name; a mixed cluster is not named (only its labelled faces keep theirs)."""
    labels = np.asarray(labels)
    out = np.asarray(human, dtype=np.int64).copy()
    persons: dict[int, set[int]] = defaultdict(set)
    for i in np.flatnonzero(out >= 0):
        if labels[i] >= 0:
            persons[int(labels[i])].add(int(out[i]))
    for c, ps in persons.items():
        if len(ps) == 1:
            p = next(iter(ps))
            members = np.flatnonzero(labels == c)
            out[members[out[members] < 0]] = p
    return out
