"""Tests for the projection head: label checks, deterministic training, projection, checkpoints and the gate.

Synthetic embeddings only, a few epochs each, so the whole file runs in seconds on 2 CPU cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from face_pipeline.core.train import (  # noqa: E402
    GateReport,
    NotEnoughLabels,
    TrainConfig,
    TrainResult,
    check_enough,
    evaluate_space,
    gate,
    load_checkpoint,
    next_version,
    plot_losses,
    project,
    run_gate,
    save_checkpoint,
    split_for_gate,
    train_projection_head,
)

DIM = 512
FAST = dict(epochs=3, batch_size=32, hidden=64, out_dim=32)


def make_people(n_people: int, faces: int, noise: float, seed: int = 0, dim: int = DIM):
    """Each person is a random direction; faces are that direction plus isotropic noise (raw-ArcFace-like)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, dim))
    y = np.repeat(np.arange(n_people), faces)
    X = centres[y] / np.sqrt(dim) + rng.normal(size=(len(y), dim)) * noise / np.sqrt(dim)
    return X.astype(np.float32), [f"p{i}" for i in y]


@pytest.fixture(scope="module")
def small_result() -> TrainResult:
    X, y = make_people(6, 5, noise=0.8)
    return train_projection_head(X, y, TrainConfig(**FAST))


# --- labels ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids",
    [[], ["a", "a", "a"], ["a", "a", "b"], ["a", "b", "c", "d"], ["a", "a", None, None]],
)
def test_too_few_labels_raise_with_minimum_in_message(ids):
    with pytest.raises(NotEnoughLabels) as err:
        check_enough(ids)
    msg = str(err.value)
    assert ">= 2 people with >= 2 faces" in msg
    assert "recommended" in msg and ">= 5 faces" in msg
    X = np.random.default_rng(0).normal(size=(len(ids), DIM)).astype(np.float32)
    with pytest.raises(NotEnoughLabels):
        train_projection_head(X, ids, TrainConfig(**FAST))


def test_minimum_is_enough_and_says_what_is_there():
    check_enough(["a", "a", "b", "b", "c"])
    with pytest.raises(NotEnoughLabels, match="5 labelled faces of 4 people, 1 of them"):
        check_enough(["a", "a", "b", "c", "d"])
    with pytest.raises(NotEnoughLabels, match=">= 3 people with >= 4 faces"):
        check_enough(["a"] * 4 + ["b"] * 4, min_people=3, min_faces=4)


# --- training -------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_weights_and_projections():
    X, y = make_people(5, 6, noise=0.8, seed=1)
    cfg = TrainConfig(**FAST, seed=7)
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    a = train_projection_head(X, y, cfg)
    b = train_projection_head(X, y, cfg)
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before  # restored
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert a.losses == b.losses
    np.testing.assert_array_equal(project(a, X), project(b, X))
    c = train_projection_head(X, y, TrainConfig(**{**FAST, "seed": 8}))
    assert not torch.equal(a.state_dict["fc1.weight"], c.state_dict["fc1.weight"])


def test_training_does_not_disturb_callers_torch_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    X, y = make_people(3, 4, noise=0.5)
    train_projection_head(X, y, TrainConfig(**{**FAST, "epochs": 1}))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
def test_training_reduces_loss_on_separable_data(mining):
    X, y = make_people(8, 6, noise=1.5, seed=2)  # separable, but raw cosines are noisy enough to violate margins
    seen: list[tuple[int, float]] = []
    cfg = TrainConfig(epochs=15, batch_size=32, hidden=64, out_dim=32, mining=mining, learning_rate=3e-3)
    result = train_projection_head(X, y, cfg, progress=lambda e, loss: seen.append((e, loss)))
    assert [e for e, _ in seen] == list(range(1, 16))
    assert [loss for _, loss in seen] == result.losses
    assert result.losses[0] > 0.05
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert result.people == 8 and result.faces == 48 and result.triplets > 0 and result.device == "cpu"


def test_unlabelled_faces_and_singletons_are_left_out():
    X, y = make_people(3, 4, noise=0.5)
    ids = list(y) + [None, None, "lonely"]
    X = np.concatenate([X, np.random.default_rng(0).normal(size=(3, DIM)).astype(np.float32)])
    result = train_projection_head(X, ids, TrainConfig(**{**FAST, "epochs": 1}))
    assert (result.people, result.faces) == (3, 12)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="mining"):
        TrainConfig(mining="random")
    with pytest.raises(ValueError, match="faces_per_person_in_batch"):
        TrainConfig(faces_per_person_in_batch=1)


# --- projection -----------------------------------------------------------------------------------------------


def test_projection_shape_dtype_and_unit_norm(small_result):
    X = np.random.default_rng(3).normal(size=(37, DIM)).astype(np.float32) * 20  # raw ArcFace norms are ~20
    Z = project(small_result, X, batch=10)  # several batches
    assert Z.shape == (37, FAST["out_dim"]) and Z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5)
    # a bare state dict works too; batch size only changes BLAS rounding
    np.testing.assert_allclose(project(small_result.state_dict, X), Z, atol=1e-6)
    assert project(small_result, X[:0]).shape == (0, FAST["out_dim"])
    with pytest.raises(ValueError, match="512"):
        project(small_result, X[:, :100])


def test_default_head_is_512_256_128():
    X, y = make_people(3, 4, noise=0.5)
    result = train_projection_head(X, y, TrainConfig(epochs=1))
    assert result.state_dict["fc1.weight"].shape == (256, 512)
    assert result.state_dict["fc2.weight"].shape == (128, 256)
    assert project(result, X).shape == (12, 128)


def test_import_is_cheap():
    code = "import sys, face_pipeline.core.train; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --- checkpoints ----------------------------------------------------------------------------------------------


def test_checkpoint_round_trip_with_sidecar(tmp_path, small_result):
    validation = {"raw": {"precision": 0.99}, "projected": {"precision": 1.0}, "promoted": True}
    pt, side = save_checkpoint(small_result, tmp_path / "ckpt", "w600k_mbf", 1, {"validation": validation})
    assert pt.name == "face_projection_w600k_mbf_v1.pt" and side.name == "face_projection_w600k_mbf_v1.json"
    state, meta = load_checkpoint(pt)
    assert all(torch.equal(state[k], small_result.state_dict[k]) for k in small_result.state_dict)
    sidecar = json.loads(side.read_text())
    assert meta == sidecar
    assert sidecar["people"] == small_result.people and sidecar["faces"] == small_result.faces
    assert sidecar["epochs"] == FAST["epochs"]
    assert sidecar["final_loss"] == pytest.approx(small_result.losses[-1])
    assert sidecar["validation"] == validation
    assert sidecar["embedding_model"] == "w600k_mbf"
    assert (sidecar["embedding_dim"], sidecar["out_dim"]) == (DIM, FAST["out_dim"])
    assert sidecar["config"] == TrainConfig(**FAST).__dict__
    created = datetime.fromisoformat(sidecar["created_at"])
    assert created.tzinfo is not None and created.utcoffset() == timezone.utc.utcoffset(None)
    X = np.random.default_rng(4).normal(size=(5, DIM)).astype(np.float32)
    np.testing.assert_array_equal(project(state, X), project(small_result, X))
    # without the sidecar the meta embedded in the .pt is used
    side.unlink()
    assert load_checkpoint(pt)[1] == sidecar


def test_checkpoint_versions_are_never_overwritten(tmp_path, small_result):
    save_checkpoint(small_result, tmp_path, "w600k_mbf", 1, {})
    with pytest.raises(FileExistsError):
        save_checkpoint(small_result, tmp_path, "w600k_mbf", 1, {})
    with pytest.raises(ValueError, match="people"):
        save_checkpoint(small_result, tmp_path, "w600k_mbf", 2, {"people": 3})
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*tmp"))


def test_next_version_increments(tmp_path, small_result):
    assert next_version(tmp_path / "missing", "w600k_mbf") == 1
    assert next_version(tmp_path, "w600k_mbf") == 1
    save_checkpoint(small_result, tmp_path, "w600k_mbf", next_version(tmp_path, "w600k_mbf"), {})
    assert next_version(tmp_path, "w600k_mbf") == 2
    save_checkpoint(small_result, tmp_path, "w600k_mbf", 7, {})
    save_checkpoint(small_result, tmp_path, "w600k_r50", 30, {})  # other models do not count
    (tmp_path / "face_projection_w600k_mbf_v99.txt").write_text("not a checkpoint")
    assert next_version(tmp_path, "w600k_mbf") == 8
    assert next_version(tmp_path, "w600k_r50") == 31


def test_plot_losses_is_png():
    png = plot_losses([0.3, 0.2, 0.1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


# --- gate -----------------------------------------------------------------------------------------------------

RAW = {"precision": 0.99, "recall": 0.80, "new_people_precision": 0.98, "new_people_recall": 0.7, "bcubed_f": 0.90}


def test_gate_rules():
    assert gate(RAW, dict(RAW)).promoted
    better = {**RAW, "recall": 0.9, "bcubed_f": 0.95}
    report = gate(RAW, better)
    assert isinstance(report, GateReport) and report.promoted and report.reasons[0].startswith("promoted")
    worse_precision = {**better, "precision": 0.985}
    report = gate(RAW, worse_precision, tolerance=0.05)  # tolerance never excuses a precision drop
    assert not report.promoted
    assert any("assignment precision" in r and "WORSE" in r for r in report.reasons)
    slightly_lower_f = {**RAW, "bcubed_f": 0.89}
    assert not gate(RAW, slightly_lower_f).promoted
    assert gate(RAW, slightly_lower_f, tolerance=0.02).promoted
    unmeasured = {**RAW, "bcubed_f": None}
    report = gate(RAW, unmeasured)
    assert not report.promoted and any("not measured" in r for r in report.reasons)


def test_split_for_gate_holds_out_whole_people_and_keeps_groups_together():
    ids = [f"p{i // 6}" for i in range(60)]  # 10 people x 6 faces
    groups = [f"photo{i // 2}" for i in range(60)]  # pairs of faces share a photo (same person here)
    tr, known, unseen = split_for_gate(ids, groups, seed=0)
    assert len(set(tr) | set(known) | set(unseen)) == len(tr) + len(known) + len(unseen) == 60
    held_people = {ids[i] for i in unseen}
    assert len(held_people) == 2 and not held_people & {ids[i] for i in np.concatenate([tr, known])}
    assert {ids[i] for i in known} <= {ids[i] for i in tr}
    side = {i: s for s, idx in enumerate((tr, known, unseen)) for i in idx}
    assert all(side[2 * k] == side[2 * k + 1] for k in range(30))
    for p in {ids[i] for i in tr}:
        assert sum(ids[i] == p for i in tr) >= 2
    assert [a.tolist() for a in split_for_gate(ids, groups, seed=0)] == [a.tolist() for a in (tr, known, unseen)]
    # tiny label sets still keep two trainable people and hold one out
    tr, known, unseen = split_for_gate(["a", "a", "b", "b", "c", "c"], None, seed=0)
    assert len({x for x in unseen}) == 2 and len(tr) == 4


def _measure(S, ids, split):
    """Calibrate a space on its training faces (honest here: the heads below were not fitted to them), then
    evaluate it on the held-out faces."""
    from face_pipeline.core.train import calibrate_space_threshold

    tr, known, unseen = split
    thr = calibrate_space_threshold(S[tr], ids[tr], kind="assign", target_precision=0.99)
    cthr = calibrate_space_threshold(S[tr], ids[tr], kind="cluster")
    return evaluate_space(S[tr], ids[tr], S[known], ids[known], S[unseen], ids[unseen], thr, cthr)


def _linear_head(W: np.ndarray) -> dict:
    """A state dict whose head computes exactly ``W @ x`` (ReLU(Wx) - ReLU(-Wx) = Wx), for building heads
    with known behaviour without training."""
    r, d = W.shape
    return {
        "fc1.weight": torch.from_numpy(np.concatenate([W, -W]).astype(np.float32)),
        "fc1.bias": torch.zeros(2 * r),
        "fc2.weight": torch.from_numpy(np.concatenate([np.eye(r), -np.eye(r)], axis=1).astype(np.float32)),
        "fc2.bias": torch.zeros(r),
    }


def test_gate_refuses_a_head_trained_on_shuffled_labels():
    X, y = make_people(14, 6, noise=0.9, seed=5)
    ids = np.asarray(y, dtype=object)
    split = split_for_gate(y, None, 0, holdout_people_frac=0.3)
    tr = split[0]
    shuffled = list(np.random.default_rng(0).permutation(ids[tr]))
    bad = train_projection_head(X[tr], shuffled, TrainConfig(epochs=10, batch_size=32, hidden=64, out_dim=32))
    raw, proj = _measure(X, ids, split), _measure(project(bad, X), ids, split)
    report = gate(raw, proj)
    assert not report.promoted
    assert report.reasons[0].startswith("refused") and any("WORSE" in r for r in report.reasons)
    assert raw["threshold"] != proj["threshold"]  # each space calibrated on its own


def test_gate_refuses_a_random_untrained_head():
    X, y = make_people(14, 6, noise=0.9, seed=5)
    ids = np.asarray(y, dtype=object)
    split = split_for_gate(y, None, 0, holdout_people_frac=0.3)
    W = np.random.default_rng(1).normal(size=(4, DIM))  # a 4-d random projection throws identity away
    report = gate(_measure(X, ids, split), _measure(project(_linear_head(W), X), ids, split))
    assert not report.promoted and any("WORSE" in r for r in report.reasons)


def test_gate_accepts_an_equal_or_better_head():
    rng = np.random.default_rng(0)  # seeded: the verdict below is for this exact draw
    basis, _ = np.linalg.qr(rng.normal(size=(64, 64)))
    ident, nuisance = basis[:, :16], basis[:, 16:]
    y = np.repeat(np.arange(16), 6)
    # 16 people on orthogonal identity directions; a strong nuisance in the other 48 dimensions swamps raw
    # cosines, and a head that keeps only the identity directions is plainly better
    X = (((2.0 * np.eye(16))[y] + 0.15 * rng.normal(size=(96, 16))) @ ident.T
         + rng.normal(size=(96, 48)) @ nuisance.T).astype(np.float32)
    ids = np.array([f"q{i}" for i in y], dtype=object)
    split = split_for_gate(ids.tolist(), None, 0, holdout_people_frac=0.3)
    raw = _measure(X, ids, split)

    same = _measure(project(_linear_head(np.eye(64)), X), ids, split)  # identity head: an equal space
    assert same["precision"] == raw["precision"] and same["bcubed_f"] == raw["bcubed_f"]
    assert gate(raw, same).promoted

    better = _measure(project(_linear_head(ident.T), X), ids, split)  # drops the nuisance exactly
    report = gate(raw, better)
    assert report.promoted, report.reasons
    assert better["bcubed_f"] > raw["bcubed_f"] and better["recall"] > raw["recall"]


def test_run_gate_end_to_end():
    X, y = make_people(12, 6, noise=0.9, seed=8)
    report, head = run_gate(X, y, TrainConfig(epochs=5, batch_size=32, hidden=64, out_dim=32))
    assert isinstance(head, TrainResult) and head.people < 12  # some people never reach training
    for side in (report.raw, report.projected):
        assert {"precision", "recall", "bcubed_f", "threshold", "cluster_threshold"} <= side.keys()
    assert report.reasons and isinstance(report.promoted, bool)
    assert report.projected["calibrated_on_fitted_faces"] is False


def test_gate_report_can_go_into_checkpoint_meta(tmp_path, small_result):
    report = gate(RAW, dict(RAW))
    _, side = save_checkpoint(small_result, tmp_path, "w600k_mbf", 1, {"validation": report})
    stored = json.loads(side.read_text())["validation"]
    assert stored["promoted"] is True and stored["raw"] == RAW and stored["reasons"] == report.reasons
