"""Clustering of faces (ArcFace embeddings): the entry point :func:`cluster_faces` over the method registry.

Why the design looks like this
------------------------------
* **Cosine similarity on L2-normalised vectors.** ArcFace is trained with an angular margin, so the angle is
  the quantity the model makes meaningful.
* **Default threshold: this model's impostor bar.** Two faces are linked when they are more similar than
  different people ever are in practice: the 99.99th percentile of the cosine between faces of different
  people (``naming.MODEL_BARS``; w600k_mbf on lfw_dev: see there). Below it links join strangers.
* **Sparse k-nearest-neighbour graph first, clustering second** (:mod:`.clustering.neighbours`): memory
  O(N*k), exact up to :data:`EXACT_KNN_MAX` faces, an IVF index above.
* **Chinese Whispers as dlib runs it is the default** (:mod:`.clustering.methods`): unweighted edges to the 50
  nearest faces above the bar, each face taking the label most of its neighbours hold. Connected components
  chain people through one bridging face; Chinese Whispers lets the many edges inside a person outvote a
  bridge, and has no minimum cluster size (most people in a library have one or two photos). On lfw_dev
  (2,940 people, look-alikes, power law) it beat the former weighted variant with split/attach refinements
  that had been tuned on faces_dev (bench/quality.py), so those refinements are no longer the default. One
  step is kept because it helps on both sets: a face left alone joins a group when two of its links into it
  reach 0.35 and clearly beat its links elsewhere (``methods.CW_ATTACH_DROP``).
* **Poor faces are placed by their group.** The recogniser sees a poor face (quality below the model's measured
  ``fine_link_quality``) less well: its links to its own person are weaker while the impostor range is the same at
  every quality, and a person's poor crops resemble each other. So, given the faces' quality, a group made only of
  poor faces joins the one group of good faces that two of its faces link to, and a poor face left alone joins the
  group of its nearest face when that group's mean face clears the link for it (:func:`methods._join_poor_groups`,
  :func:`methods._join_lone_poor_faces`). Groups of good faces never move, so brothers and look-alikes are grouped
  exactly as without it. faces_dev: B³ F 0.985 → 1.000 (Elton John's five tight crops, two lone photos); lfw_dev:
  two lone faces join, a subject rightly and a background face wrongly by LFW's labels (bench/anchor_gap.py).
  Organise passes quality to the clustering at the link (in the recogniser's own space only); the stricter one
  that naming reads as evidence of someone else stays links only.
* **Constraints.** Two faces of one photo are two people, and so are two faces a person answered "different
  people" for (cannot-links): their edges are removed before clustering and every method's result is split
  where transitivity still joined them (:func:`methods._split_group_conflicts`). "Same person" answers
  (must-links) are edges of full weight.
* **Labels do not steer unknown clustering.** Everyone is clustered the same way whether or not people are
  named, so naming someone can never make the clusters of the people nobody named worse.

Labels are int64 with ``-1`` for noise (a face in no cluster of at least ``min_size`` faces). A new method is
one function plus one :data:`REGISTRY` entry.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from face_pipeline.core.clustering.incremental import assign_to_clusters, stable_cluster_ids  # noqa: F401
from face_pipeline.core.clustering.methods import (  # noqa: F401
    AFTER_FINISH,
    HDBSCAN_FLOOR,
    REGISTRY,
    Graph,
    _attach_noise,
    _average_linkage,
    _chinese_whispers_csr,
    _compact,
    _finish,
    _split_group_conflicts,
    _split_incoherent,
    chinese_whispers,
    connected_components_labels,
)
from face_pipeline.core.clustering.neighbours import (  # noqa: F401
    EXACT_KNN_MAX,
    NeighbourCache,
    _group_codes,
    _normalise,
    _similarity_graph,
    _topk_desc,
    ivf_knn_graph,
    knn_graph,
    neighbour_graph,
)

#: Method names, default first (derived from the registry: settings and CLI choices read this).
METHODS: tuple[str, ...] = tuple(REGISTRY)
DEFAULT_METHOD = METHODS[0]

#: Default link similarity: w600k_mbf's impostor bar rounded up (see ``naming.MODEL_BARS``).
DEFAULT_THRESHOLD = 0.40


def methods_help() -> str:
    """One line per method for the CLI's ``--unknown-method`` help."""
    return "; ".join(f"{name}: {m.summary}" for name, m in REGISTRY.items())


def _pairs(pairs: Iterable[tuple[int, int]] | None, n: int) -> np.ndarray:
    arr = np.asarray([(int(a), int(b)) for a, b in (pairs or ()) if a != b], dtype=np.int64).reshape(-1, 2)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"constraint pair outside 0..{n - 1}")
    return arr


def cluster_faces(
    X: np.ndarray,
    method: str | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_size: int = 2,
    k: int | None = None,
    groups: Sequence | None = None,
    seed: int = 0,
    must_link: Iterable[tuple[int, int]] | None = None,
    cannot_link: Iterable[tuple[int, int]] | None = None,
    neighbours: NeighbourCache | None = None,
    quality: np.ndarray | None = None,
    poor_below: float = 0.0,
) -> np.ndarray:
    """Cluster face embeddings; returns int64 labels (N,), -1 = noise.

    ``X`` is normalised here if it is not already. ``threshold`` is the cosine similarity that links two
    faces (see each method in :data:`REGISTRY` for how it uses it). ``min_size`` is the smallest cluster kept.
    ``k`` is the neighbour count of the kNN graph (``None``: the method's own). ``groups`` (photo id per face,
    ``None`` = unconstrained) guarantees that no cluster holds two faces of the same photo; ``cannot_link``
    (row pairs) that no cluster holds both faces of a pair; ``must_link`` pairs are linked at full weight.
    ``neighbours`` (a :class:`NeighbourCache` of these same faces) shares one kNN graph between clusterings.
    ``quality`` (per face, NaN = unknown, read as good) with ``poor_below`` (the model's
    ``ModelBars.fine_link_quality``; 0 = off) lets Chinese Whispers place poor faces by what their group as a whole
    says (:func:`methods._join_poor_groups`, :func:`methods._join_lone_poor_faces`).
    """
    method = method or DEFAULT_METHOD
    if method not in REGISTRY:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    spec = REGISTRY[method]
    Xn = _normalise(X)
    n = Xn.shape[0]
    g = _group_codes(groups, n)
    poor = None
    if quality is not None and poor_below > 0:
        q = np.asarray(quality, dtype=np.float64)
        if q.shape != (n,):
            raise ValueError(f"{n} faces but quality scores of shape {q.shape}")
        poor = np.nan_to_num(q, nan=1.0) < poor_below
    if n == 0:
        return np.empty(0, np.int64)
    if n == 1:
        return np.array([0 if min_size <= 1 else -1], np.int64)
    must, cannot_pairs = _pairs(must_link, n), _pairs(cannot_link, n)
    cannot: dict[int, set[int]] = defaultdict(set)
    for a, b in cannot_pairs.tolist():
        cannot[a].add(b)
        cannot[b].add(a)
    if len(must) and cannot:
        must = np.array([(a, b) for a, b in must.tolist() if b not in cannot.get(a, ())], dtype=np.int64).reshape(-1, 2)
    # Edges below the floor are never used by the method, so the approximate (IVF) search may drop them.
    # The exact path drops them too, so that results do not change character at N = EXACT_KNN_MAX.
    floor = spec.floor(threshold)
    if neighbours is not None and Xn is neighbours.X:
        indices, sims = neighbours.graph(Xn, int(k or spec.k), floor=floor, seed=seed)
    else:
        indices, sims = neighbour_graph(Xn, int(k or spec.k), floor=floor, seed=seed)
    below = sims < floor
    indices[below], sims[below] = -1, -np.inf
    for a, others in cannot.items():  # a "different people" answer removes the edge, whatever the similarity
        hit = np.isin(indices[a], list(others))
        indices[a, hit], sims[a, hit] = -1, -np.inf
    graph = Graph(Xn, indices, sims, g, must, dict(cannot), poor)
    labels = np.asarray(spec.fn(graph, threshold=threshold, min_size=min_size, seed=seed, **spec.params), dtype=np.int64)
    if g is not None or cannot:
        labels = _split_group_conflicts(labels, Xn, g, dict(cannot))
    labels = _finish(labels, min_size)
    after = AFTER_FINISH.get(method)
    if after is not None:
        labels = after(labels, graph, threshold)
    return labels


def immich_cluster(*args, **kwargs):
    """Moved to :func:`face_pipeline.evaluation.anchors.immich_cluster` (a baseline, not product logic)."""
    from face_pipeline.evaluation.anchors import immich_cluster as fn

    return fn(*args, **kwargs)


def hdbscan_baseline(*args, **kwargs):
    """Moved to :func:`face_pipeline.evaluation.anchors.hdbscan_baseline`."""
    from face_pipeline.evaluation.anchors import hdbscan_baseline as fn

    return fn(*args, **kwargs)
