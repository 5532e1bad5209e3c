"""Organising the library: known people assigned, unknown faces clustered, results written to SQL.

This is where the pure algorithms (:mod:`assign`, :mod:`cluster`) meet the label state in SQL:

* **supervised assignment** names faces by the rules of :mod:`naming`: prototypes from human labels only, no
  vouching, nothing named inside the model's impostor range, the library's clusters may veto, and whatever is
  suggestive but not enough becomes a suggestion (stored through the suggestion queue). Human labels are never
  changed; earlier automatic names are recomputed, because new labels can change them.
* **unknown clustering** groups everyone the same way whatever the labels, and keeps the faces still nobody's. Cluster ids are stable across runs
  (matched by overlap), so ``unknown_cluster_12`` keeps meaning the same group for a person looking at it.
* **incremental** handles a new batch right after it is embedded: assign to people, else join an existing
  unknown cluster, else wait (noise) for the next full re-cluster.

Events written here carry actor ``pipeline``; the label-change sensor ignores them, so automation never
triggers itself.
"""

from __future__ import annotations

import io
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Callable, Sequence

import numpy as np
from sqlalchemy import func, select

from face_pipeline.core import face_state
from face_pipeline.core import cluster as cluster_mod
from face_pipeline.core import naming
from face_pipeline.core import suggestions as suggestions_mod
from face_pipeline.core.clustering import memo
from face_pipeline.core.clustering.neighbours import NeighbourCache
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import (
    HUMAN_SOURCES,
    PERSON_MERGED,
    PIPELINE_ACTOR,
    SOURCE_AUTO,
    FaceAssignmentEvent,
    FaceInstance,
    FaceRejection,
    Person,
    PipelineState,
)
from face_pipeline.core.embedding_files import load_embeddings
from face_pipeline.core.suggestions import Suggestion
from face_pipeline.settings import Settings

log = logging.getLogger(__name__)
Projector = Callable[[np.ndarray], np.ndarray]


@dataclass
class Library:
    """Every embedded face with its vector and its current label state, in face-id order."""

    face_ids: list[str]
    X: np.ndarray  # (N, D) L2-normalised
    image_ids: list[str]
    person_ids: list[str | None]
    sources: list[str | None]
    cluster_ids: list[str | None]
    rejections: dict[str, set[str]]  # face_id → persons it is not
    active_persons: set[str]  # persons that may receive faces (active or hidden, not merged)
    quality: list[float | None] = field(default_factory=list)  # quality score per face (None = unknown)
    projected: bool = False  # X is a learned space (a projection head's), not the recogniser's own

    @cached_property
    def quality_scores(self) -> np.ndarray:
        """``quality`` as float64, NaN where unknown: the one form naming, clustering and the memo key read."""
        return np.array([np.nan if q is None else q for q in self.quality], dtype=np.float64)

    @cached_property
    def row_of(self) -> dict[str, int]:
        """face_id → row (built once per library: answers, rejections and batches are all given as face ids)."""
        return {f: i for i, f in enumerate(self.face_ids)}

    @cached_property
    def human(self) -> np.ndarray:
        """Faces a person labelled (computed once: callers index it inside per-face loops)."""
        return np.array([s in HUMAN_SOURCES and p is not None for s, p in zip(self.sources, self.person_ids)], dtype=bool)

    @cached_property
    def neighbours(self) -> NeighbourCache:
        """One kNN graph of these faces for every clustering of them in this process (see NeighbourCache)."""
        return NeighbourCache(self.X)


def _label_state(settings: Settings) -> tuple[dict[str, tuple], dict[str, set[str]], set[str]]:
    """From SQL: face_id → (image, person, source, cluster); rejections; persons that may receive faces."""
    with session_scope(settings.sql_url) as s:
        rows = {
            r.face_id: (r.image_id, r.person_id, r.assignment_source, r.cluster_id, r.quality_score)
            for r in s.execute(
                select(FaceInstance.face_id, FaceInstance.image_id, FaceInstance.person_id, FaceInstance.assignment_source, FaceInstance.cluster_id,
                       FaceInstance.quality_score)
            )
        }
        rejections: dict[str, set[str]] = defaultdict(set)
        for fid, pid in s.execute(select(FaceRejection.face_id, FaceRejection.person_id)):
            rejections[fid].add(pid)
        active = {pid for (pid,) in s.execute(select(Person.person_id).where(Person.status != PERSON_MERGED))}
    return rows, dict(rejections), active


def _with_labels(ids: list[str], X: np.ndarray, state: tuple[dict[str, tuple], dict[str, set[str]], set[str]]) -> Library:
    rows, rejections, active = state
    return Library(
        face_ids=ids,
        X=X,
        image_ids=[rows[f][0] for f in ids],
        person_ids=[rows[f][1] for f in ids],
        sources=[rows[f][2] for f in ids],
        cluster_ids=[rows[f][3] for f in ids],
        rejections=rejections,
        active_persons=active,
        quality=[rows[f][4] for f in ids],
    )


def load_library(settings: Settings, project: Projector | None = None) -> Library:
    ids, X = load_embeddings(settings)
    state = _label_state(settings)
    keep = [i for i, f in enumerate(ids) if f in state[0]]  # vectors of faces deleted from SQL are stale
    ids = [ids[i] for i in keep]
    X = X[keep] if len(keep) else np.zeros((0, X.shape[1] if X.ndim == 2 else 512), dtype=np.float32)
    if project is not None and len(X):
        X = project(X)
    lib = _with_labels(ids, X, state)
    lib.projected = project is not None
    return lib


def refresh_labels(settings: Settings, lib: Library) -> Library:
    """The same faces and vectors with the label state re-read from SQL (no embedding files read again)."""
    state = _label_state(settings)
    keep = [i for i, f in enumerate(lib.face_ids) if f in state[0]]
    out = _with_labels([lib.face_ids[i] for i in keep], lib.X[keep], state)
    out.projected = lib.projected
    return out


# ---------------------------------------------------------------------------------------------- supervised ----
@dataclass
class AssignmentReport:
    faces: int = 0
    human_labelled: int = 0
    persons: int = 0
    assigned: int = 0
    newly_assigned: int = 0
    unassigned_again: int = 0
    changed_person: int = 0
    mean_confidence: float = 0.0
    threshold: float = 0.0
    impostor_bar: float = 0.0
    vetoed: int = 0  # faces that cleared the bar but whose cluster is clearly someone else (became suggestions)
    suggestions: list[Suggestion] = field(default_factory=list)
    updates: dict[str, tuple] = field(default_factory=dict)  # face_id → (person, confidence, margin) decided this run
    seconds: float = 0.0


def _human_index(lib: Library) -> tuple[np.ndarray, list[str]]:
    """(person index per face, -1 = no human label of an active person; index → person id)."""
    persons = sorted({lib.person_ids[i] for i in np.flatnonzero(lib.human) if lib.person_ids[i] in lib.active_persons})
    index = {p: n for n, p in enumerate(persons)}
    human = np.array([index.get(p, -1) if h else -1 for p, h in zip(lib.person_ids, lib.human)], dtype=np.int64)
    return human, persons


def _queue_pairs(settings: Settings, lib: Library, which: str) -> list[tuple[int, int]]:
    """Row pairs from people's answers in the suggestion queue (``cannot_link_pairs`` / ``must_link_pairs``)."""
    fn = {"cannot_link_pairs": suggestions_mod.cannot_link_pairs, "must_link_pairs": suggestions_mod.must_link_pairs}[which]
    pos = lib.row_of
    with session_scope(settings.sql_url) as s:
        pairs = fn(s)
    return [(pos[a], pos[b]) for a, b in pairs if a in pos and b in pos]


def _evidence_clusters(settings: Settings, lib: Library, rows: Sequence[int] | None, cannot: list, must: list,
                       threshold: float | None = None) -> np.ndarray:
    """The library's structure for rule 5 of :mod:`naming`: a clustering of everyone (labels not used).

    A full run clusters every face. An incremental run (``rows``) keeps the faces' current groups (a person's
    faces are their person's group, unknown faces their cluster) and lets each new face join the group of its
    nearest grouped face, as :func:`cluster.assign_to_clusters` does for unknown clusters. ``threshold``
    overrides the link (the stricter second clustering of rule 5); it has no incremental form.
    """
    if rows is None and threshold is None:
        return cluster_everyone(settings, lib, settings.unknown_method, settings.unknown_threshold, 2, must, cannot)
    if rows is None:
        return cluster_mod.cluster_faces(lib.X, settings.unknown_method, threshold=threshold, min_size=2, k=settings.unknown_knn,
                                         groups=lib.image_ids, seed=0, must_link=must, cannot_link=cannot, neighbours=lib.neighbours)
    new = set(rows)
    names = [None if i in new else (lib.person_ids[i] or (c if face_state.is_unknown_cluster(c := lib.cluster_ids[i]) else None))
             for i in range(len(lib.face_ids))]
    number = {c: n for n, c in enumerate(sorted({c for c in names if c is not None}))}
    labels = np.array([number[c] if c is not None else -1 for c in names], dtype=np.int64)
    old = np.flatnonzero(labels >= 0)
    rows_a = np.asarray(sorted(new), dtype=np.int64)
    if len(old) and len(rows_a):
        labels[rows_a] = cluster_mod.assign_to_clusters(lib.X[rows_a], lib.X[old], labels[old], settings.unknown_threshold)
    return labels


def _clustering_graph(settings: Settings, lib: Library, tell_apart: float) -> tuple[np.ndarray, np.ndarray]:
    """The kNN graph the clusterings read (their method's neighbours), from the library's :class:`NeighbourCache`,
    kept down to the lowest floor any reader needs (:func:`naming.chain_graph_floor`), so that it is computed once
    per organise for all of them."""
    from face_pipeline.core.clustering.neighbours import _normalise, neighbour_graph

    floor = naming.chain_graph_floor(settings.unknown_method, settings.unknown_threshold, tell_apart)
    k, Xn = int(settings.unknown_knn or cluster_mod.REGISTRY[settings.unknown_method].k), _normalise(lib.X)
    if Xn is lib.X:  # the clustering shares this graph (it shares it only for vectors already unit-length)
        return lib.neighbours.graph(lib.X, k, floor=floor, seed=0)
    return neighbour_graph(Xn, k, floor=floor, seed=0)


def _poor_below(settings: Settings, lib: Library) -> float:
    """The quality under which clustering places a face by its group: the model's measured ``fine_link_quality`` in
    the recogniser's own space, 0 (off) in a learned space, where nobody measured how poor faces link."""
    return 0.0 if lib.projected else naming.bars_for(settings.model_name).fine_link_quality


def cluster_everyone(settings: Settings, lib: Library, method: str, threshold: float, min_size: int, must: list, cannot: list) -> np.ndarray:
    """The clustering of every face (labels unused) that both the naming rules and the unknown clusters read.

    Poor faces (below the model's ``fine_link_quality``) are placed by what their group as a whole says
    (:func:`cluster.cluster_faces`). Computed once per library state: the second asking step (usually the next
    asset) reads it back from the home's cache folder (:mod:`clustering.memo`, keyed by everything it depends on)."""
    poor_below = _poor_below(settings, lib)
    params = {"method": method, "threshold": float(threshold), "min_size": int(min_size), "k": settings.unknown_knn, "seed": 0,
              "code": memo.code_version(), "poor_below": poor_below, "quality": memo.digest_values(lib.quality_scores)}
    key = memo.digest(lib.X, lib.face_ids, lib.image_ids, params, must, cannot)
    return memo.remembered(settings.cache_dir, key, lambda: cluster_mod.cluster_faces(
        lib.X, method, threshold=threshold, min_size=min_size, k=settings.unknown_knn, groups=lib.image_ids, seed=0,
        must_link=must, cannot_link=cannot, neighbours=lib.neighbours, quality=lib.quality_scores, poor_below=poor_below))


def supervised_assignment(
    settings: Settings,
    *,
    threshold: float | None = None,
    strategy: str | None = None,
    project: Projector | None = None,
    space: str = "raw",
    rows: Sequence[int] | None = None,
    lib: Library | None = None,
    head=None,
) -> AssignmentReport:
    """(Re)name every face without a human label by the rules of :mod:`naming`; write changes, prototypes and
    (full runs) the suggestions.

    ``threshold`` is the direct bar (default ``person_match_threshold``). In raw space the impostor bar is the
    model's recorded one; in a learned space nobody measured it, so no face below the direct bar is suggested.
    ``head`` (a promoted ``heads.NamedPersonHead``) may decide among named people, in raw space (naming rule 8).
    """
    t0 = time.perf_counter()
    threshold = settings.person_match_threshold if threshold is None else threshold
    strategy = strategy or settings.person_strategy
    lib = lib or load_library(settings, project)
    bars = naming.bars_for(settings.model_name)
    impostor = min(bars.impostor, threshold) if space == "raw" else threshold
    rep = AssignmentReport(faces=len(lib.face_ids), human_labelled=int(lib.human.sum()), threshold=threshold, impostor_bar=impostor)
    human, persons = _human_index(lib)
    candidates = [i for i in (rows if rows is not None else range(len(lib.face_ids))) if not lib.human[i]]
    updates: dict[str, tuple[str | None, float | None, float | None]] = {}
    if persons and candidates:
        cannot, must = _queue_pairs(settings, lib, "cannot_link_pairs"), _queue_pairs(settings, lib, "must_link_pairs")
        pindex = {p: n for n, p in enumerate(persons)}
        # Every face's rejections, not only the batch's: a face rejected for a person holds back its look-alikes
        # (naming rule 7), whichever run they arrive in.
        row_of = lib.row_of
        rejected = {row_of[f]: {pindex[p] for p in ps if p in pindex} for f, ps in lib.rejections.items() if f in row_of}
        # Chain questions read the clustering's own kNN graph (full runs only, as all suggestions): asked for here,
        # before the stricter clustering asks for it at its higher floor, it is built once for both.
        chains = rows is None and space == "raw" and bars.tell_apart > 0  # naming._chain_questions
        graph = _clustering_graph(settings, lib, bars.tell_apart) if chains else None
        result = naming.name_faces(
            lib.X, human, groups=lib.image_ids, quality=lib.quality_scores,
            clusters=_evidence_clusters(settings, lib, rows, cannot, must), direct=threshold, impostor=impostor,
            fine_clusters=_evidence_clusters(settings, lib, rows, cannot, must, naming.FINE_LINK) if rows is None else None,
            fine_link_quality=bars.fine_link_quality if space == "raw" else 0.0,
            tell_apart=bars.tell_apart if space == "raw" else 0.0,
            min_quality=settings.person_min_quality, margin=settings.person_margin, strategy=strategy,
            rejected={i: r for i, r in rejected.items() if r}, cannot_link=cannot, candidates=candidates, suggest=rows is None,
            neighbours=graph, head=head,
        )
        rep.persons = len({int(p) for p in human[human >= 0]})
        rep.vetoed = int(result.vetoed.sum())
        for i in candidates:
            p = int(result.person[i])
            if p >= 0:
                updates[lib.face_ids[i]] = (persons[p], float(result.confidence[i]), float(result.margin[i]))
        rep.suggestions = [_suggestion(lib, persons, r) for r in result.suggestions]
    for i in candidates:  # "nobody" only needs writing where automation had named the face before
        if lib.person_ids[i] is not None:
            updates.setdefault(lib.face_ids[i], (None, None, None))
    confidences = [c for p, c, _ in updates.values() if p is not None]
    rep.assigned = len(confidences)
    rep.mean_confidence = float(np.mean(confidences)) if confidences else 0.0
    _write_assignments(settings, updates, rep)
    rep.updates = updates
    if rows is None:
        _store_suggestions(settings, rep.suggestions)
    rep.seconds = time.perf_counter() - t0
    return rep


def _suggestion(lib: Library, persons: list[str], r: naming.RawSuggestion) -> Suggestion:
    def shown_cluster(rows: tuple[int, ...]) -> str | None:
        ids = {lib.cluster_ids[i] for i in rows}
        c = next(iter(ids)) if len(ids) == 1 else None
        return c if face_state.is_unknown_cluster(c) else None

    return Suggestion(
        kind=r.kind, face_ids=tuple(lib.face_ids[i] for i in r.rows),
        person_id=persons[r.person] if r.person is not None else None,
        other_person_id=persons[r.other_person] if r.other_person is not None else None,
        other_face_ids=tuple(lib.face_ids[i] for i in r.other_rows), score=round(r.score, 5), bar=round(r.bar, 5), floor=round(r.floor, 5),
        cluster_id=shown_cluster(r.rows) if r.rows else None, other_cluster_id=shown_cluster(r.other_rows) if r.other_rows else None,
        evidence_face_id=lib.face_ids[r.evidence] if r.evidence is not None else None,
    )


def _store_suggestions(settings: Settings, suggestions: list[Suggestion]) -> None:
    """Hand this run's suggestions to the queue, which replaces the open automation-made ones, keeps answered
    ones and never re-proposes rejected ones."""
    with session_scope(settings.sql_url) as s:
        suggestions_mod.replace_pipeline_suggestions(s, suggestions)


def _write_assignments(settings: Settings, updates: dict[str, tuple], rep: AssignmentReport) -> None:
    """Apply automation's decisions through the face-state owner (which never overrides a human label)."""
    if not updates:
        return
    with session_scope(settings.sql_url) as s:
        outcomes = face_state.write_pipeline_decisions(s, updates)
    rep.newly_assigned += outcomes["assigned"]
    rep.changed_person += outcomes["moved"]
    rep.unassigned_again += outcomes["unassigned"]


# ---------------------------------------------------------------------------------------------- clustering ----
@dataclass
class ClusterReport:
    method: str = ""
    unknown_faces: int = 0
    clusters: int = 0
    clustered_faces: int = 0
    noise: int = 0
    kept_ids: int = 0
    new_ids: int = 0
    sizes: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def size_histogram(self) -> dict[str, int]:
        bins = Counter()
        for n in self.sizes:
            bins["2" if n == 2 else "3-5" if n <= 5 else "6-10" if n <= 10 else "11-50" if n <= 50 else "51+"] += 1
        return {k: bins.get(k, 0) for k in ("2", "3-5", "6-10", "11-50", "51+")}


def _state(s, key: str, default: str) -> str:
    row = s.get(PipelineState, key)
    return row.value if row else default


def _set_state(s, key: str, value: str) -> None:
    row = s.get(PipelineState, key)
    if row is None:
        s.add(PipelineState(key=key, value=value))
    else:
        row.value = value


def cluster_unknown(
    settings: Settings,
    *,
    method: str | None = None,
    min_size: int | None = None,
    threshold: float | None = None,
    project: Projector | None = None,
    lib: Library | None = None,
) -> ClusterReport:
    """Group the faces that no person holds; write stable ``unknown_cluster_N`` / noise ids to SQL.

    Everyone is clustered, named or not, and the unknown clusters are the groups restricted to the faces nobody
    holds: labels never steer the clustering, so naming people can only take faces out of groups, never make
    the groups of the people nobody named worse. People's "same person" / "different people" answers (the
    suggestion queue's must/cannot-links) and the one-person-per-photo rule are honoured.
    """
    t0 = time.perf_counter()
    method = method or settings.unknown_method
    min_size = settings.unknown_min_size if min_size is None else min_size
    threshold = settings.unknown_threshold if threshold is None else threshold
    lib = lib or load_library(settings, project)
    rows = [i for i, p in enumerate(lib.person_ids) if p is None]
    rep = ClusterReport(method=method, unknown_faces=len(rows))
    labels = np.full(len(rows), -1, dtype=np.int64)
    if len(rows) >= 2:
        everyone = cluster_everyone(settings, lib, method, threshold, min(2, max(1, min_size)),
                                    _queue_pairs(settings, lib, "must_link_pairs"), _queue_pairs(settings, lib, "cannot_link_pairs"))
        named = np.array([p is not None for p in lib.person_ids], dtype=bool)
        labels = naming.unknown_groups(everyone, np.where(named, 0, -1), min_size=min_size)[rows]
    face_ids = [lib.face_ids[i] for i in rows]
    previous = {lib.face_ids[i]: lib.cluster_ids[i] for i in rows if face_state.is_unknown_cluster(lib.cluster_ids[i])}
    with session_scope(settings.sql_url) as s:
        next_number = int(_state(s, "next_cluster_number", "1"))
        mapping, new_next = cluster_mod.stable_cluster_ids(previous, labels, face_ids, next_number)
        _set_state(s, "next_cluster_number", str(new_next))
        sizes = Counter(mapping.values())
        rep.clusters, rep.sizes = len(sizes), sorted(sizes.values(), reverse=True)
        rep.clustered_faces = sum(sizes.values())
        rep.noise = len(rows) - rep.clustered_faces
        rep.new_ids = new_next - next_number
        rep.kept_ids = rep.clusters - rep.new_ids
        face_state.set_unknown_groups(s, {fid: mapping.get(fid, face_state.noise_id(fid)) for fid in face_ids})
        _set_state(s, "last_clustered_at", str(time.time()))
    rep.seconds = time.perf_counter() - t0
    return rep


# -------------------------------------------------------------------------------------------- incremental ----
@dataclass
class IncrementalReport:
    new_faces: int = 0
    assigned: int = 0
    joined_clusters: int = 0
    new_clusters: int = 0
    noise: int = 0
    seconds: float = 0.0


def organize_new_faces(settings: Settings, face_ids: Sequence[str], project: Projector | None = None) -> IncrementalReport:
    """Right after a batch is embedded: assign its faces to people, else to existing unknown clusters, else group
    them with each other and with the noise faces they resemble (new unknown clusters)."""
    t0 = time.perf_counter()
    lib = load_library(settings, project)
    pos = lib.row_of
    human = lib.human
    rows = [pos[f] for f in face_ids if f in pos and not human[pos[f]]]
    rep = IncrementalReport(new_faces=len(rows))
    if not rows:
        return rep
    a = supervised_assignment(settings, rows=rows, lib=lib, project=project)
    rep.assigned = a.assigned
    lib = _with_decisions(lib, a.updates)
    # A re-materialised batch brings back faces (same ids) that already hold an unknown cluster: they keep it and
    # count as cluster members. Treating them as new would turn a cluster lying inside the batch into noise and
    # lose its stable id at the next re-cluster.
    wanted_ids = set(face_ids)
    new = {f for f, c in zip(lib.face_ids, lib.cluster_ids) if f in wanted_ids and not face_state.is_unknown_cluster(c)}
    rows = [i for i, f in enumerate(lib.face_ids) if f in new and lib.person_ids[i] is None]
    old = [i for i, c in enumerate(lib.cluster_ids) if lib.face_ids[i] not in new and lib.person_ids[i] is None and face_state.is_unknown_cluster(c)]
    wanted: dict[str, str] = {}
    if rows:
        if old:
            cluster_names = sorted({lib.cluster_ids[i] for i in old})
            number = {c: n for n, c in enumerate(cluster_names)}
            old_labels = np.array([number[lib.cluster_ids[i]] for i in old], dtype=np.int64)
            got = cluster_mod.assign_to_clusters(lib.X[rows], lib.X[old], old_labels, settings.unknown_threshold)
        else:
            got = np.full(len(rows), -1)
        left: list[int] = []
        for local, i in enumerate(rows):
            fid = lib.face_ids[i]
            if got[local] >= 0:
                wanted[fid] = cluster_names[int(got[local])]
                rep.joined_clusters += 1
            else:
                wanted[fid] = face_state.noise_id(fid)
                left.append(i)
        new_groups = _group_the_rest(settings, lib, left, new)
        wanted.update(new_groups)
        rep.new_clusters = len(set(new_groups.values()))
        rep.noise = sum(1 for i in left if face_state.is_noise(wanted[lib.face_ids[i]]))
    with session_scope(settings.sql_url) as s:
        if rows and new_groups:  # their numbers are taken: never handed out again
            highest = max(face_state.unknown_cluster_number(c) or 0 for c in new_groups.values())
            _set_state(s, "next_cluster_number", str(max(highest + 1, int(_state(s, "next_cluster_number", "1")))))
        face_state.set_unknown_groups(s, wanted)
    rep.seconds = time.perf_counter() - t0
    return rep


def _with_decisions(lib: Library, updates: dict[str, tuple]) -> Library:
    """``lib`` as it stands after automation's decisions of this run, without reading the whole library's label
    state from SQL again (at a million faces that read costs more than the batch's own work). Human rows are
    never among the decisions written, so patching only automation's rows is what SQL now holds."""
    if not updates:
        return lib
    pos = lib.row_of
    person_ids, cluster_ids, sources = list(lib.person_ids), list(lib.cluster_ids), list(lib.sources)
    for fid, (person, _conf, _margin) in updates.items():
        i = pos.get(fid)
        if i is None or lib.human[i]:
            continue
        person_ids[i] = person
        cluster_ids[i] = person  # an assigned face's group is its person; None sends it back to clustering
        sources[i] = SOURCE_AUTO if person is not None else None
    return replace(lib, person_ids=person_ids, cluster_ids=cluster_ids, sources=sources)


def _group_the_rest(settings: Settings, lib: Library, left: list[int], new: set[str]) -> dict[str, str]:
    """New faces that joined no person and no existing cluster are grouped with each other and with the library's
    noise faces that resemble them, by the configured clustering method; each group holding a new face and at least
    ``unknown_min_size`` faces gets a new stable ``unknown_cluster_N`` (so a new batch's strangers can be named the
    same day, not after the nightly re-cluster). Only noise faces near a new face are looked at, so the cost
    follows the batch, not the library."""
    if not left:
        return {}
    noise = [i for i, c in enumerate(lib.cluster_ids)
             if lib.person_ids[i] is None and face_state.is_noise(c) and lib.face_ids[i] not in new]
    near: list[int] = []
    if noise:
        sims = lib.X[noise] @ lib.X[left].T
        near = [noise[j] for j in np.flatnonzero(sims.max(axis=1) >= settings.unknown_threshold)]
    pool = left + near
    if len(pool) < max(2, settings.unknown_min_size):
        return {}
    labels = cluster_mod.cluster_faces(lib.X[pool], settings.unknown_method, threshold=settings.unknown_threshold,
                                       min_size=settings.unknown_min_size, groups=[lib.image_ids[i] for i in pool],
                                       quality=lib.quality_scores[pool], poor_below=_poor_below(settings, lib))
    with session_scope(settings.sql_url) as s:
        next_number = int(_state(s, "next_cluster_number", "1"))
    out: dict[str, str] = {}
    left_set = set(left)
    for label in sorted({int(x) for x in labels if x >= 0}):
        members = [pool[j] for j in np.flatnonzero(labels == label)]
        if not any(i in left_set for i in members):
            continue  # a group of old noise faces only: the nightly re-cluster decides about those
        cid = face_state.unknown_cluster_id(next_number)
        next_number += 1
        out.update({lib.face_ids[i]: cid for i in members})
    return out


# ------------------------------------------------------------------------------------------------- checks ----
def same_photo_conflicts(settings: Settings) -> list[tuple[str, str, int]]:
    """(image_id, person_id, faces) wherever one person holds two faces of one photo — must be empty."""
    with session_scope(settings.sql_url) as s:
        return [
            (img, pid, n)
            for img, pid, n in s.execute(
                select(FaceInstance.image_id, FaceInstance.person_id, func.count())
                .where(FaceInstance.person_id.is_not(None))
                .group_by(FaceInstance.image_id, FaceInstance.person_id)
                .having(func.count() > 1)
            )
        ]


def human_label_changes_since(settings: Settings, event_id: int) -> tuple[int, int]:
    """(number of human events after ``event_id``, newest event id) — the label-change sensor's question."""
    with session_scope(settings.sql_url) as s:
        newest = s.scalar(select(func.max(FaceAssignmentEvent.id))) or 0
        n = s.scalar(select(func.count()).where(FaceAssignmentEvent.id > event_id, FaceAssignmentEvent.actor != PIPELINE_ACTOR)) or 0
    return int(n), int(newest)


def cluster_size_plot(sizes: Sequence[int]) -> bytes:
    """PNG histogram of unknown-cluster sizes, for the asset's metadata."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    if sizes:
        ax.hist(sizes, bins=range(2, max(sizes) + 2), color="#4f6df5", edgecolor="white")
    ax.set_xlabel("faces in cluster")
    ax.set_ylabel("clusters")
    ax.set_title(f"{len(sizes)} unknown clusters")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
