"""Supervised assignment: scoring, thresholds, per-photo constraints and calibration, on synthetic embeddings.

Most tests place labelled faces exactly on basis vectors, so a face built as ``face({A: 0.8, B: 0.5})`` scores
exactly 0.8 against A and 0.5 against B under every strategy, and expected outcomes can be stated by hand.
Prototypes never move (no re-centring on automatic matches; a test below pins it). Real-data checks live in bench/assign_calibration.py (the embedding cache is not part of the repo).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from face_pipeline.core.assign import (
    STRATEGIES,
    Prototypes,
    assign_faces,
    assign_scores,
    build_prototypes,
    calibrate_threshold,
    person_scores,
)

D = 16
A, B, C = 0, 1, 2
FILLER = D - 1  # basis direction no person uses: soaks up the rest of a face's unit norm


def face(weights: dict[int, float]) -> np.ndarray:
    v = np.zeros(D)
    for axis, w in weights.items():
        v[axis] = w
    rest = 1.0 - float(np.sum(v**2))
    assert rest >= -1e-12
    v[FILLER] = np.sqrt(max(rest, 0.0))
    return v


def basis_protos(n_persons: int = 3, copies: int = 2) -> Prototypes:
    x = np.repeat(np.eye(D)[:n_persons], copies, axis=0)
    ids = [f"p{i}" for i in range(n_persons) for _ in range(copies)]
    return build_prototypes(x, ids)


def assign(X, **kw):
    kw.setdefault("threshold", 0.45)
    return assign_faces(basis_protos(), np.asarray(X), **kw)


def clusters(rng, n_persons, per_person, dim=64, spread=0.5):
    centres = rng.normal(size=(n_persons, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.repeat(centres, per_person, axis=0) + spread * rng.normal(size=(n_persons * per_person, dim)) / np.sqrt(dim)
    return x, np.repeat(np.arange(n_persons), per_person)


# --- prototypes and scores ----------------------------------------------------------------------------------


def test_build_prototypes_shapes_order_and_normalisation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, D)) * 3.0
    ids = ["b", "a", "b", "c", "a", "b", "b"]
    p = build_prototypes(x, ids, max_exemplars=16)
    assert p.person_ids == ["b", "a", "c"]  # first appearance, so callers can map indices back
    np.testing.assert_allclose(np.linalg.norm(p.centroids, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(p.exemplars, axis=1), 1.0, rtol=1e-5)
    assert len(p.exemplars) == 7  # all kept when under the cap
    assert np.bincount(p.exemplar_owner).tolist() == [4, 2, 1]
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected_b = xn[[0, 2, 5, 6]].mean(axis=0)
    np.testing.assert_allclose(p.centroids[0], expected_b / np.linalg.norm(expected_b), rtol=1e-5)
    np.testing.assert_allclose(p.exemplars, xn[p.exemplar_index], rtol=1e-5)


def test_build_prototypes_caps_exemplars_deterministically_and_diversely():
    rng = np.random.default_rng(1)
    # One person with three distinct looks (modes); exemplars should cover all three.
    modes = np.eye(D)[:3]
    x = np.repeat(modes, 20, axis=0) + 0.05 * rng.normal(size=(60, D))
    ids = ["p"] * 60
    p1 = build_prototypes(x, ids, max_exemplars=3, seed=7)
    p2 = build_prototypes(x, ids, max_exemplars=3, seed=7)
    assert len(p1.exemplars) == 3
    np.testing.assert_array_equal(p1.exemplar_index, p2.exemplar_index)
    covered = {int(np.argmax(e[:3])) for e in p1.exemplars}
    assert covered == {0, 1, 2}


def test_person_scores_strategies():
    p = build_prototypes(np.stack([face({A: 1.0}), face({A: 0.6, C: 0.8}), face({A: 0.0, C: 1.0}), face({B: 1.0})]),
                         ["a", "a", "a", "b"])
    x = np.stack([face({C: 1.0})])
    cen = person_scores(p, x, "centroid")
    ex = person_scores(p, x, "exemplar")
    hyb = person_scores(p, x, "hybrid")
    assert cen.shape == ex.shape == hyb.shape == (1, 2)
    np.testing.assert_allclose(ex[0, 0], (1.0 + 0.8) / 2, rtol=1e-5)  # mean of the two best exemplars
    np.testing.assert_allclose(ex[0, 1], 0.0, atol=1e-6)  # single exemplar: its cosine
    np.testing.assert_allclose(hyb, np.maximum(cen, ex), rtol=1e-6)
    with pytest.raises(ValueError):
        person_scores(p, x, "nearest")
    assert set(STRATEGIES) == {"centroid", "exemplar", "hybrid"}


# --- assignment ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_synthetic_clusters_assigned_and_strangers_left_alone(strategy):
    rng = np.random.default_rng(2)
    x, truth = clusters(rng, n_persons=6, per_person=10)
    labelled = np.zeros(len(x), dtype=bool)
    for p in range(6):
        labelled[np.flatnonzero(truth == p)[:3]] = True
    protos = build_prototypes(x[labelled], truth[labelled].tolist())
    strangers, _ = clusters(rng, n_persons=20, per_person=1)
    queries = np.concatenate([x[~labelled], strangers])
    res = assign_faces(protos, queries, threshold=0.45, strategy=strategy)
    got = [protos.person_ids[i] if i >= 0 else None for i in res.person_index]
    assert got[: (~labelled).sum()] == truth[~labelled].tolist()
    assert got[(~labelled).sum() :] == [None] * 20
    assert res.person_ids(protos) == got


def test_threshold_respected():
    X = [face({A: 0.7}), face({A: 0.46}), face({A: 0.44}), face({B: 0.3, C: 0.2})]
    res = assign(X, threshold=0.45)
    assert res.person_index.tolist() == [A, A, -1, -1]
    assert np.all(res.confidence[res.person_index >= 0] >= 0.45)
    np.testing.assert_allclose(res.confidence, [0.7, 0.46, 0.44, 0.3], rtol=1e-5)
    assert assign(X, threshold=0.75).person_index.tolist() == [-1, -1, -1, -1]


def test_cannot_link_better_face_wins_other_takes_next_valid_person():
    f_strong, f_weak = face({A: 0.8}), face({A: 0.6, B: 0.5})
    for order in ([0, 1], [1, 0]):  # row order must not matter
        X = np.stack([f_strong, f_weak])[order]
        res = assign(X, groups=["photo", "photo"])
        got = dict(zip(order, res.person_index.tolist()))
        assert got == {0: A, 1: B}
    # Without a valid alternative the weaker face stays unassigned.
    res = assign([face({A: 0.6, B: 0.3}), f_strong], groups=["photo", "photo"])
    assert res.person_index.tolist() == [-1, A]
    # Different photos: no constraint, both are A.
    assert assign([f_strong, f_weak], groups=["p1", "p2"]).person_index.tolist() == [A, A]
    # A None photo id means "own photo".
    assert assign([f_strong, f_weak], groups=[None, None]).person_index.tolist() == [A, A]


def test_cannot_link_solves_whole_photo_not_greedily():
    # Greedy (highest score first) would give f1 A and leave f2 with nothing; f1 also looks like B, so the
    # best matching is f1 -> B, f2 -> A.
    X = [face({A: 0.7, B: 0.65}), face({A: 0.68, B: 0.3})]
    assert assign(X, groups=["g", "g"]).person_index.tolist() == [B, A]
    # But a face that is clearly A is not pushed onto a barely-passing B just so a weak A-like face can be A.
    X = [face({A: 0.85, B: 0.46}), face({A: 0.5})]
    assert assign(X, groups=["g", "g"]).person_index.tolist() == [A, -1]


def test_cannot_link_matching_is_optimal_and_valid_on_random_photos():
    rng = np.random.default_rng(3)
    for _ in range(200):
        n, p, t = int(rng.integers(2, 5)), int(rng.integers(1, 5)), 0.3
        scores = rng.uniform(-0.2, 0.9, size=(n, p))
        res = assign_scores(scores, threshold=t, groups=["g"] * n)
        chosen = [q for q in res.person_index if q >= 0]
        assert len(chosen) == len(set(chosen))
        assert all(scores[i, q] >= t for i, q in enumerate(res.person_index) if q >= 0)
        gain = sum(scores[i, q] - t for i, q in enumerate(res.person_index) if q >= 0)
        best = 0.0
        for combo in itertools.product(range(-1, p), repeat=n):
            used = [q for q in combo if q >= 0]
            if len(used) != len(set(used)) or any(q >= 0 and scores[i, q] < t for i, q in enumerate(combo)):
                continue
            best = max(best, sum(scores[i, q] - t for i, q in enumerate(combo) if q >= 0))
        assert gain == pytest.approx(best, abs=1e-6)


def test_rejected_respected():
    X = [face({A: 0.8, B: 0.5}), face({A: 0.8, B: 0.3})]
    res = assign(X, rejected={0: {A}, 1: {A}})
    assert res.person_index.tolist() == [B, -1]
    assert res.runner_up[0] != A and res.runner_up[1] != A
    np.testing.assert_allclose(res.confidence, [0.5, 0.3], rtol=1e-5)  # best *admissible* person
    assert assign(X).person_index.tolist() == [A, A]


def test_occupied_respected():
    X = [face({A: 0.8, B: 0.5}), face({A: 0.8, B: 0.5}), face({A: 0.8, B: 0.5})]
    res = assign(X, groups=["p1", "p2", "p3"], occupied={"p1": {A}, "p3": {A, B}})
    assert res.person_index.tolist() == [B, A, -1]
    with pytest.raises(ValueError):
        assign(X, occupied={"p1": {A}})  # photo ids are needed to apply it


def test_margin_and_runner_up():
    X = [face({A: 0.6, B: 0.5, C: 0.1}), face({A: 0.7}), face({C: 0.5, B: 0.45})]
    res = assign(X, margin=0.05)
    assert res.person_index.tolist() == [A, A, C]
    assert res.runner_up.tolist() == [B, B, B]  # ties at 0 resolve to the lowest index among B, C
    np.testing.assert_allclose(res.margin, [0.1, 0.7, 0.05], rtol=1e-5)
    res = assign(X, margin=0.15)
    assert res.person_index.tolist() == [-1, A, -1]
    # Unassigned faces still describe their best candidate and its lead.
    assert res.runner_up[0] == B
    np.testing.assert_allclose(res.confidence[[0, 2]], [0.6, 0.5], rtol=1e-5)
    np.testing.assert_allclose(res.margin[[0, 2]], [0.1, 0.05], rtol=1e-5)


def test_margin_ignores_persons_ruled_out_by_the_photo():
    # f2 is close to both A and B, but f1 takes A, so f2 competes only with C (0): B is unambiguous.
    X = [face({A: 0.9}), face({A: 0.6, B: 0.55})]
    res = assign(X, groups=["g", "g"], margin=0.1)
    assert res.person_index.tolist() == [A, B]
    assert res.runner_up[1] == C
    np.testing.assert_allclose(res.margin[1], 0.55, rtol=1e-5)
    # If the remaining alternatives are close, the face is left for clustering rather than shuffled down.
    X = [face({A: 0.9}), face({A: 0.6, B: 0.55, C: 0.5})]
    res = assign(X, groups=["g", "g"], margin=0.1)
    assert res.person_index.tolist() == [A, -1]
    assert (res.runner_up[1], round(float(res.confidence[1]), 5)) == (C, 0.55)


def test_ambiguous_faces_cannot_vouch_for_each_other():
    # Each face alone is ambiguous (gap < margin). Giving one A and the other B would make each look
    # unambiguous only because of the other: circular, so both stay unassigned.
    X = [face({A: 0.6, B: 0.55}), face({A: 0.55, B: 0.6})]
    res = assign(X, groups=["g", "g"], margin=0.1)
    assert res.person_index.tolist() == [-1, -1]
    # A chain is fine: f1 is clearly A, which settles f2 as B, which settles f3 as C.
    X = [face({A: 0.9}), face({A: 0.65, B: 0.6}), face({B: 0.62, C: 0.55})]
    res = assign(X, groups=["g"] * 3, margin=0.1)
    assert res.person_index.tolist() == [A, B, C]


def test_photo_shortcut_matches_full_solution(monkeypatch):
    """Photos whose faces cannot interact skip the matching; that shortcut must not change any output."""
    import face_pipeline.core.assign as mod

    rng = np.random.default_rng(6)
    for _ in range(100):
        n, p = int(rng.integers(4, 30)), int(rng.integers(1, 6))
        scores = rng.uniform(-0.2, 0.9, size=(n, p))
        groups = rng.integers(0, n // 2 + 1, n).tolist()
        rejected = {int(r): {int(rng.integers(0, p))} for r in rng.integers(0, n, 2)}
        occupied = {int(g): {int(rng.integers(0, p))} for g in rng.integers(0, n // 2 + 1, 2)}
        for margin in (0.0, 0.1):
            kw = dict(threshold=0.4, margin=margin, groups=groups, rejected=rejected, occupied=occupied)
            fast = assign_scores(scores, **kw)
            with monkeypatch.context() as m:
                m.setattr(mod, "_independent", lambda *a: False)
                full = assign_scores(scores, **kw)
            np.testing.assert_array_equal(fast.person_index, full.person_index)
            np.testing.assert_array_equal(fast.runner_up, full.runner_up)
            np.testing.assert_allclose(fast.confidence, full.confidence)
            np.testing.assert_allclose(fast.margin, full.margin)


def test_single_person_and_empty_inputs():
    one = build_prototypes(np.stack([face({A: 1.0})]), ["only"])
    res = assign_faces(one, np.stack([face({A: 0.8})]), threshold=0.45)
    assert res.person_index.tolist() == [0] and res.runner_up.tolist() == [-1] and np.isinf(res.margin[0])
    empty = assign_faces(one, np.zeros((0, D)), threshold=0.45)
    assert empty.person_index.shape == (0,)
    none = build_prototypes(np.zeros((0, D)), [])
    res = assign_faces(none, np.stack([face({A: 0.8})]), threshold=0.45)
    assert res.person_index.tolist() == [-1] and res.runner_up.tolist() == [-1]


# --- no re-centring -------------------------------------------------------------------------------------------


def test_faces_matched_in_a_batch_never_move_the_prototypes():
    """A is labelled in one look (axis A); faces drift towards axis C (f1, then f2). f1 clears the bar on its own;
    f2 does not, and three confident f1 matches must not pull A's prototype towards it (re-centring on
    automatic matches is how a brother's 530 photos once took his name)."""
    f1 = face({A: 0.6, C: 0.6})
    f2 = face({A: 0.4, C: 0.85})
    X = np.stack([f1, f1, f1, f2])
    protos = build_prototypes(np.stack([face({A: 1.0})] * 2 + [face({B: 1.0})] * 2), ["a", "a", "b", "b"])
    before = protos.centroids.copy()
    res = assign_faces(protos, X, threshold=0.5)
    assert res.person_index.tolist() == [0, 0, 0, -1]
    assert res.confidence[3] == pytest.approx(0.4, abs=1e-5)  # against the labels themselves
    np.testing.assert_array_equal(protos.centroids, before)
    assert res.person_index.tolist() == assign_faces(protos, X[::-1], threshold=0.5).person_index.tolist()[::-1]


# --- calibration --------------------------------------------------------------------------------------------


def test_calibrate_threshold_is_deterministic_and_separates_easy_from_hard_data():
    rng = np.random.default_rng(4)
    x_easy, ids = clusters(rng, n_persons=16, per_person=8, spread=0.4)
    x_hard, _ = clusters(np.random.default_rng(4), n_persons=16, per_person=8, spread=1.4)
    t1 = calibrate_threshold(x_easy, ids.tolist(), strategy="hybrid")
    t2 = calibrate_threshold(x_easy, ids.tolist(), strategy="hybrid")
    assert t1 == t2
    assert 0.2 <= t1 <= 0.8
    # Noisier identities bring impostors closer, so the required threshold cannot drop.
    t_hard = calibrate_threshold(x_hard, ids.tolist(), strategy="hybrid")
    assert t_hard >= t1
    # The threshold sits above the bulk of the different-people cosines (it must beat unknown strangers).
    xn = x_easy / np.linalg.norm(x_easy, axis=1, keepdims=True)
    sims = xn @ xn.T
    impostor = sims[ids[:, None] != ids[None, :]]
    assert t1 > np.percentile(impostor, 99)
    # The optional impostor guard never lowers the threshold and respects its headroom.
    guarded = calibrate_threshold(x_easy, ids.tolist(), impostor_headroom=0.05, repeats=1)
    assert guarded >= calibrate_threshold(x_easy, ids.tolist(), repeats=1)
    assert guarded >= impostor.max() + 0.05 - 1e-9
