"""The shortcuts that make a library-wide organise affordable at scale must not change a single decision:

* the bulk SQL write of automation's decisions (``face_state.write_pipeline_decisions``) does exactly what the
  one-face rule does, never touches a human label and writes nothing that would not change;
* one kNN graph shared by clusterings at different links (``NeighbourCache``) gives the graphs each would have
  computed on its own, on the exact and on the approximate (IVF) path;
* the clustering of everyone remembered between the organise steps (``clustering.memo``) is only ever reused for
  identical inputs, and a full organise gives the same clusters with or without it.
"""

# ruff: noqa: F811 - the fixtures imported from test_organize are used as test parameters of the same name
from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from face_pipeline.core import cluster as cluster_mod
from face_pipeline.core import face_state, organize
from face_pipeline.core.clustering import memo
from face_pipeline.core.clustering.neighbours import NeighbourCache, ivf_knn_graph, knn_graph
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import FaceAssignmentEvent, FaceInstance
from face_pipeline_tests.core.test_organize import (  # noqa: F401 - fixtures
    _migrated,
    label,
    library,
    settings,
    standard_scene,
)

COLUMNS = ("person_id", "cluster_id", "assignment_source", "person_confidence", "person_margin", "payload_dirty")


def _rows(settings) -> dict[str, tuple]:
    with session_scope(settings.sql_url) as s:
        return {f.face_id: tuple(getattr(f, c) for c in COLUMNS) for f in s.scalars(select(FaceInstance))}


def _events(settings) -> list[tuple]:
    with session_scope(settings.sql_url) as s:
        return sorted((e.actor, e.action, e.face_id, e.from_person, e.to_person, e.reason)
                      for e in s.scalars(select(FaceAssignmentEvent)))


def _decisions(faces: dict[str, list[str]], alice: str, bob: str) -> dict[str, tuple]:
    """Every kind of outcome: human (left alone), assigned, moved, unassigned, refreshed, unchanged."""
    a, b, u = faces["alice"], faces["bob"], faces["uma"]
    return {
        a[0]: (bob, 0.9, 0.2),  # human label of Alice: must stay
        a[3]: (alice, 0.55, 0.1),  # nobody → Alice
        a[4]: (bob, 0.61, 0.05),  # Alice (auto, seeded below) → Bob
        a[5]: (None, None, None),  # Alice (auto) → nobody
        a[6]: (alice, 0.7, 0.3),  # Alice (auto, 0.5) → Alice with a new confidence
        b[3]: (bob, 0.5, 0.2),  # Bob (auto, 0.5, margin 0.2) → the same
        u[0]: (None, None, None),  # nobody → nobody
    }


def _seed_auto(settings, faces, alice, bob) -> None:
    with session_scope(settings.sql_url) as s:
        for fid, pid in ((faces["alice"][4], alice), (faces["alice"][5], alice), (faces["alice"][6], alice), (faces["bob"][3], bob)):
            face_state.assign(s.get(FaceInstance, fid), pid, "auto", 0.5, 0.2)


def test_bulk_decisions_do_what_the_one_face_rule_does(library, tmp_path):
    faces = standard_scene(library)
    settings = library.settings
    alice = label(settings, faces["alice"][:1], "Alice")
    bob = label(settings, faces["bob"][:1], "Bob")
    _seed_auto(settings, faces, alice, bob)
    decisions = _decisions(faces, alice, bob)
    before = _rows(settings)

    # one face at a time, in a copy of the home
    import shutil

    from face_pipeline.settings import Settings

    twin = Settings(home=tmp_path / "twin")
    shutil.copytree(settings.home_dir, twin.home_dir)
    outcomes_one = {}
    with session_scope(twin.sql_url) as s:
        for fid, (p, c, m) in decisions.items():
            outcomes_one[fid] = face_state.write_pipeline_decision(s, s.get(FaceInstance, fid), p, c, m)
    with session_scope(settings.sql_url) as s:
        outcomes_bulk = face_state.write_pipeline_decisions(s, decisions)

    assert sorted(outcomes_bulk.elements()) == sorted(outcomes_one.values())
    assert set(outcomes_one.values()) == {"human", "assigned", "moved", "unassigned", "refreshed", "unchanged"}
    assert _rows(settings) == _rows(twin)
    assert _events(settings) == _events(twin)
    after = _rows(settings)
    assert after[faces["alice"][0]] == before[faces["alice"][0]]  # the human label did not move
    assert after[faces["bob"][3]] == before[faces["bob"][3]]  # nothing to change: nothing written


def test_bulk_write_rechecks_for_a_human_label_in_sql(library, monkeypatch):
    """A decision computed from a stale read (the face looked unlabelled) must not overwrite the label a person gave
    meanwhile: the UPDATE itself re-checks, and no automatic event claims a change that did not happen."""
    faces = standard_scene(library)
    settings = library.settings
    target = faces["uma"][0]
    alice = label(settings, [target], "Alice")
    real = face_state._pipeline_decision

    def stale(face_id, current, *args):  # what the rule would decide had it read the row before the label
        if face_id == target:
            current = {"person_id": None, "assignment_source": None, "person_confidence": None}
        return real(face_id, current, *args)

    monkeypatch.setattr(face_state, "_pipeline_decision", stale)
    before = _events(settings)
    with session_scope(settings.sql_url) as s:
        outcomes = face_state.write_pipeline_decisions(s, {target: ("person_x", 0.9, 0.1)})
    assert outcomes["assigned"] == 1  # the stale read did decide to write ...
    assert _rows(settings)[target][:3] == (alice, alice, "manual")  # ... and SQL refused it
    assert _events(settings) == before


def _faces(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 6, 128))
    X = centres[rng.integers(0, len(centres), n)] * 0.9 + rng.normal(size=(n, 128)) * 0.08
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("path", ["exact", "ivf"])
def test_one_graph_serves_every_link(path, monkeypatch):
    X = _faces(3000)
    if path == "ivf":  # force the approximate path at a size a test can afford
        monkeypatch.setattr("face_pipeline.core.clustering.neighbours.EXACT_KNN_MAX", 100)
    cache = NeighbourCache(X)
    low = cache.graph(X, 20, floor=0.3)
    for floor in (0.3, 0.45, 0.6):
        got_i, got_s = cache.graph(X, 20, floor=floor)
        want_i, want_s = (ivf_knn_graph(X, 20, floor=floor) if path == "ivf" else knn_graph(X, 20))
        # the same neighbours (ties may come in either order) with the same similarities
        assert np.array_equal(np.sort(np.where(got_s >= floor, got_i, -1), axis=1), np.sort(np.where(want_s >= floor, want_i, -1), axis=1))
        assert np.array_equal(np.where(got_s >= floor, got_s, -np.inf), np.where(want_s >= floor, want_s, -np.inf))
    assert np.array_equal(cache.graph(X, 20, floor=0.3)[0], low[0])  # a copy each time: callers may modify it
    with pytest.raises(ValueError):
        cache.graph(X.copy(), 20, floor=0.3)
    for threshold in (0.4, 0.5):
        assert np.array_equal(cluster_mod.cluster_faces(X, threshold=threshold, neighbours=cache),
                              cluster_mod.cluster_faces(X, threshold=threshold))


def test_memo_reuses_only_identical_inputs(tmp_path):
    X = _faces(60)
    ids, photos = [f"f{i}" for i in range(60)], [f"p{i}" for i in range(60)]
    calls = []

    def compute():
        calls.append(1)
        return np.arange(60)

    key = memo.digest(X, ids, photos, {"threshold": 0.4}, [(1, 2)], [])
    assert np.array_equal(memo.remembered(tmp_path, key, compute), np.arange(60))
    assert np.array_equal(memo.remembered(tmp_path, key, compute), np.arange(60))
    assert len(calls) == 1
    X2 = X.copy()
    X2[5, 0] += 1e-3
    for other in (memo.digest(X2, ids, photos, {"threshold": 0.4}, [(1, 2)], []),
                  memo.digest(X, ids[::-1], photos, {"threshold": 0.4}, [(1, 2)], []),
                  memo.digest(X, ids, photos, {"threshold": 0.5}, [(1, 2)], []),
                  memo.digest(X, ids, photos, {"threshold": 0.4}, [], []),
                  memo.digest(X, ids, photos, {"threshold": 0.4}, [(1, 2)], [(3, 4)])):
        assert other != key
    assert memo.digest(X, ids, photos, {"threshold": 0.4}, [(2, 1)], []) == key  # a pair is unordered
    (tmp_path / memo.FILE_NAME).write_bytes(b"not a zip file")  # a broken file is a miss, not an error
    assert np.array_equal(memo.remembered(tmp_path, key, compute), np.arange(60))
    assert len(calls) == 2


def test_organise_gives_the_same_clusters_with_or_without_the_remembered_clustering(library, tmp_path, monkeypatch):
    import shutil

    from face_pipeline.settings import Settings

    standard_scene(library)
    settings = library.settings
    twin = Settings(home=tmp_path / "twin")
    shutil.copytree(settings.home_dir, twin.home_dir)
    for s in (settings, twin):
        organize.supervised_assignment(s)
    assert (settings.cache_dir / memo.FILE_NAME).is_file()
    shutil.rmtree(twin.cache_dir)  # the twin must cluster again
    organize.cluster_unknown(twin)

    def must_not_cluster(*args, **kwargs):
        raise AssertionError("the clustering of everyone was computed again for identical inputs")

    monkeypatch.setattr(organize.cluster_mod, "cluster_faces", must_not_cluster)
    organize.cluster_unknown(settings)  # reads what supervised_assignment remembered
    assert _rows(settings) == _rows(twin)
    groups = {r[1] for r in _rows(settings).values() if face_state.is_unknown_cluster(r[1])}
    assert len(groups) >= 2  # Uma and Ulf: there were clusters to agree on


# ------------------------------------------------------------------------------ scores of named people ----
def _people(seed: int = 0):
    from face_pipeline.core import assign as assign_mod

    rng = np.random.default_rng(seed)
    X = _faces(2400, seed)
    labels = rng.choice(len(X), 240, replace=False)
    owner = rng.integers(0, 50, len(labels))
    return X, assign_mod.build_prototypes(X[labels] + 0.05 * rng.normal(size=(len(labels), X.shape[1])).astype(np.float32),
                                          owner.tolist())


@pytest.mark.parametrize("strategy", ["hybrid", "centroid", "exemplar"])
def test_candidate_scores_are_the_dense_scores_at_or_above_the_floor(strategy):
    from face_pipeline.core import assign as assign_mod

    X, protos = _people()
    dense = assign_mod.person_scores(protos, X, strategy)
    sparse_scores = assign_mod.candidate_scores(protos, X, strategy, floor=0.3).toarray()
    assert np.allclose(sparse_scores, np.where(dense >= 0.3, dense, 0.0), atol=1e-5)
    assert (dense >= 0.3).sum() > 100  # there were pairs to find


def test_candidate_scores_by_cells_never_invent_a_score(monkeypatch):
    """Above the exact budget the search runs in cells: it may miss a pair (read as below the floor), but every
    score it returns is the exact one."""
    from face_pipeline.core import assign as assign_mod

    X, protos = _people(1)
    dense = assign_mod.person_scores(protos, X, "hybrid")
    monkeypatch.setattr(assign_mod, "EXACT_CANDIDATE_PAIRS", 10)
    got = assign_mod.candidate_scores(protos, X, "hybrid", floor=0.3).toarray()
    stored = got != 0
    assert np.allclose(got[stored], dense[stored], atol=1e-5) and (dense[stored] >= 0.3).all()
    assert stored.sum() >= 0.9 * (dense >= 0.3).sum()


def test_blockwise_assignment_is_the_dense_assignment():
    """Faces of one photo are matched jointly; doing it in photo-aligned blocks over the stored scores gives the
    dense matrix's answer whenever the threshold is at or above the floor."""
    from face_pipeline.core import assign as assign_mod
    from face_pipeline.core import naming

    X, protos = _people(2)
    rng = np.random.default_rng(5)
    photos = rng.integers(0, 900, len(X)).tolist()  # 2-3 faces on many photos: real matching problems
    rejected = {int(r): {int(rng.integers(0, len(protos)))} for r in rng.choice(len(X), 80, replace=False)}
    occupied = {photos[int(r)]: {int(rng.integers(0, len(protos)))} for r in rng.choice(len(X), 40, replace=False)}
    dense = assign_mod.assign_scores(assign_mod.person_scores(protos, X, "hybrid"), threshold=0.4, groups=photos,
                                     rejected=rejected, occupied=occupied)
    scores = naming._Scores(assign_mod.candidate_scores(protos, X, "hybrid", floor=0.3), 0.3)
    blockwise = scores.assign(threshold=0.4, margin=0.0, groups=photos, rejected=rejected, occupied=occupied)
    assert np.array_equal(dense.person_index, blockwise.person_index)
    named = dense.person_index >= 0
    assert named.sum() > 50 and np.allclose(dense.confidence[named], blockwise.confidence[named], atol=1e-5)
