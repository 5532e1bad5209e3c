"""Tests for the projection head: label checks, deterministic training, projection, checkpoints, the naming rule
the head is used under, and the gate.

Synthetic embeddings (a few epochs each) for the mechanics, so most of the file runs in seconds on 2 CPU cores;
the naming-rule contract is also checked on real faces (faces_dev's cached embeddings).
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
    AUGMENTATIONS,
    GateMinimum,
    GateReport,
    NotEnoughLabels,
    TrainConfig,
    TrainResult,
    augment_crop,
    centroid_scores,
    check_enough,
    evaluate_naming,
    gate,
    gate_split,
    load_checkpoint,
    name_faces,
    next_version,
    plot_losses,
    project,
    run_gate,
    save_checkpoint,
    split_for_gate,
    train_projection_head,
)

DIM = 512
FAST = dict(epochs=3, batch_size=32, hidden=64)
MLP = dict(FAST, architecture="mlp", out_dim=32)  # the old whole-space head, kept for comparison


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


@pytest.mark.parametrize("loss,mining", [("triplet", "batch_hard"), ("triplet", "semi_hard"), ("prototype", "batch_hard")])
def test_training_reduces_loss_on_separable_data(loss, mining):
    X, y = make_people(8, 6, noise=3.0, seed=2)  # separable, but raw cosines are noisy enough to violate margins
    seen: list[tuple[int, float]] = []
    cfg = TrainConfig(epochs=15, batch_size=32, hidden=64, mining=mining, loss=loss, learning_rate=3e-3)
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
    with pytest.raises(ValueError, match="architecture"):
        TrainConfig(architecture="transformer")
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="arcface")


def test_augmented_copies_make_one_label_trainable_and_count_apart():
    X, y = make_people(4, 1, noise=0.5)  # one label each: no positive pair without copies
    with pytest.raises(NotEnoughLabels):
        train_projection_head(X, y, TrainConfig(**FAST))
    rng = np.random.default_rng(1)
    copies = np.repeat(X, 3, axis=0) + rng.normal(size=(12, DIM)).astype(np.float32) * 0.01
    result = train_projection_head(X, y, TrainConfig(**FAST), augmented=copies, augmented_ids=np.repeat(y, 3).tolist())
    assert (result.people, result.faces, result.augmented_faces) == (4, 4, 12)
    with pytest.raises(ValueError, match="labelled people"):
        train_projection_head(X, y, TrainConfig(**FAST), augmented=copies[:1], augmented_ids=["somebody else"])


def test_residual_head_starts_as_the_identity_and_drift_penalty_holds_unlabelled_faces():
    X, y = make_people(6, 5, noise=1.5, seed=3)
    U = np.random.default_rng(9).normal(size=(300, DIM)).astype(np.float32)  # faces nobody labelled
    untrained = train_projection_head(X, y, TrainConfig(**{**FAST, "epochs": 1, "learning_rate": 0.0}))
    Un = U / np.linalg.norm(U, axis=1, keepdims=True)
    np.testing.assert_allclose(project(untrained, U), Un, atol=1e-6)  # lr 0: exactly raw space

    cfg = dict(epochs=20, batch_size=32, hidden=64, learning_rate=3e-3, cos_margin=0.5)
    free = train_projection_head(X, y, TrainConfig(**cfg, drift_weight=0.0))
    held = train_projection_head(X, y, TrainConfig(**cfg, drift_weight=5.0), unlabelled=U)
    drift = lambda r: float(np.mean(1.0 - (project(r, U) * Un).sum(1)))  # noqa: E731
    assert held.unlabelled_faces == 300
    assert drift(held) < 0.5 * drift(free), (drift(held), drift(free))


def test_augment_crop_is_fixed_and_keeps_shape():
    crop = np.random.default_rng(0).integers(0, 255, size=(112, 112, 3), dtype=np.uint8)
    a, b = augment_crop(crop), augment_crop(crop)
    assert len(a) == len(AUGMENTATIONS) == 4
    assert all(x.shape == crop.shape and x.dtype == np.uint8 for x in a)
    assert all(np.array_equal(x, z) for x, z in zip(a, b))
    np.testing.assert_array_equal(a[0], crop[:, ::-1])  # flip
    assert not np.array_equal(a[2], crop)  # blurred


# --- projection -----------------------------------------------------------------------------------------------


def test_projection_shape_dtype_and_unit_norm(small_result):
    X = np.random.default_rng(3).normal(size=(37, DIM)).astype(np.float32) * 20  # raw ArcFace norms are ~20
    Z = project(small_result, X, batch=10)  # several batches
    assert Z.shape == (37, DIM) and Z.dtype == np.float32  # a residual head keeps raw space's dimension
    np.testing.assert_allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(project(small_result.state_dict, X), Z, atol=1e-6)
    assert project(small_result, X[:0]).shape == (0, DIM)
    with pytest.raises(ValueError, match="512"):
        project(small_result, X[:, :100])
    Xm, ym = make_people(3, 4, noise=0.5)
    old = train_projection_head(Xm, ym, TrainConfig(**{**MLP, "epochs": 1}))
    assert project(old, X).shape == (37, 32)


def test_default_head_is_residual_512_256_512():
    X, y = make_people(3, 4, noise=0.5)
    result = train_projection_head(X, y, TrainConfig(epochs=1))
    assert result.state_dict["fc1.weight"].shape == (256, 512)
    assert result.state_dict["fc2.weight"].shape == (512, 256)
    assert "residual" in result.state_dict
    assert project(result, X).shape == (12, 512)


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
    assert (sidecar["embedding_dim"], sidecar["out_dim"]) == (DIM, DIM)
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


# --- the naming rule the head is used under ------------------------------------------------------------------


def test_name_faces_contract_on_hand_made_scores():
    raw = np.array([
        [0.55, 0.32, 0.00],  # raw names 0; the head prefers 1, which clears the floor: re-ranked to 1
        [0.35, 0.10, 0.00],  # raw names nobody; one candidate (0); head lifts it
        [0.35, 0.33, 0.00],  # two candidates, raw names nobody: not named (not the head's call)
        [0.20, 0.10, 0.05],  # nobody clears the floor: never named, whatever the head says
        [0.50, 0.10, 0.00],  # raw names 0; the head's best below the bar: raw's choice stands
    ], dtype=np.float32)
    head = np.array([
        [0.45, 0.70, 0.99],
        [0.45, 0.99, 0.99],
        [0.60, 0.20, 0.00],
        [0.99, 0.99, 0.99],
        [0.30, 0.10, 0.99],
    ], dtype=np.float32)
    who_raw, _ = name_faces(raw, None, raw_bar=0.40, raw_floor=0.30)
    assert who_raw.tolist() == [0, -1, -1, -1, 0]
    who, score = name_faces(raw, head, raw_bar=0.40, raw_floor=0.30)
    assert who.tolist() == [1, 0, -1, -1, 0]
    np.testing.assert_allclose(score, [0.70, 0.45, 0.0, 0.0, 0.50])
    with pytest.raises(ValueError, match="floor"):
        name_faces(raw, head, raw_bar=0.3, raw_floor=0.4)


def test_head_never_names_below_the_raw_floor_random_scores():
    rng = np.random.default_rng(0)
    for _ in range(20):
        raw = rng.uniform(-0.2, 0.8, size=(200, 7)).astype(np.float32)
        head = rng.uniform(-0.2, 1.0, size=(200, 7)).astype(np.float32)
        who, _ = name_faces(raw, head, raw_bar=0.4, raw_floor=0.3)
        named = who >= 0
        assert (raw[np.flatnonzero(named), who[named]] >= 0.3).all()
        raw_who, _ = name_faces(raw, None, raw_bar=0.4, raw_floor=0.3)
        # the head adds names only where exactly one person clears the floor
        added = named & (raw_who < 0)
        assert ((raw[added] >= 0.3).sum(1) == 1).all()


@pytest.fixture(scope="module")
def faces_dev_embeddings():
    from face_pipeline.evaluation.datasets import load_labelled

    try:
        return load_labelled("faces_dev", progress=False)
    except FileNotFoundError as exc:  # pragma: no cover - data missing on this machine
        pytest.skip(f"faces_dev not available: {exc}")


def test_a_head_pulling_everyone_to_one_person_cannot_name_faces_in_the_impostor_range(faces_dev_embeddings):
    """Real faces: a worst-case head (it maps every face onto person A's label centroid, so its score for A is
    ~1 for everybody) may only name A where the face's raw cosine to A clears the floor; every stranger whose raw
    similarity lies inside the impostor range stays unnamed."""
    d = faces_dev_embeddings
    subj = np.flatnonzero(d.labelled)
    people = sorted(set(d.identity[subj].tolist()))
    named, strangers = people[:6], people[6:]
    labels = np.array([[i for i in subj if d.identity[i] == p][0] for p in named])
    queries = np.array([i for i in subj if i not in set(labels.tolist())])
    target = d.X[labels[0]]
    evil = {  # residual head whose output is target * 1000 + x: every face lands on A
        "fc1.weight": torch.zeros(4, DIM), "fc1.bias": torch.ones(4),
        "fc2.weight": torch.from_numpy(np.repeat(target[:, None] * 250.0, 4, axis=1).astype(np.float32)),
        "fc2.bias": torch.zeros(DIM), "residual": torch.ones(()),
    }
    fn = lambda V: project(evil, V)  # noqa: E731
    raw = centroid_scores(d.X[queries], d.X[labels], range(6), 6)
    head = centroid_scores(fn(d.X[queries]), fn(d.X[labels]), range(6), 6)
    assert (head[:, 0] > 0.99).all()  # the head really does claim everyone for A
    floor = 0.30
    who, _ = name_faces(raw, head, raw_bar=0.40, raw_floor=floor)
    named_rows = np.flatnonzero(who >= 0)
    assert (raw[named_rows, who[named_rows]] >= floor).all()
    stranger_rows = np.array([j for j, i in enumerate(queries) if d.identity[i] in strangers])
    inside = stranger_rows[raw[stranger_rows].max(1) < floor]
    assert len(inside) > 100 and (who[inside] == -1).all()
    # and through evaluate_naming, the strangers named by the head rule are no more than raw's here
    truth = d.identity[queries].tolist()
    m_raw = evaluate_naming(d.X[labels], named, d.X[queries], truth, raw_bar=0.4, raw_floor=floor)
    m_head = evaluate_naming(d.X[labels], named, d.X[queries], truth, raw_bar=0.4, raw_floor=floor, project_fn=fn)
    assert m_head["strangers_named"] <= m_raw["strangers_named"] == 0


# --- gate -----------------------------------------------------------------------------------------------------

RAW = {"precision": 0.99, "recall": 0.80, "strangers_named": 2, "new_people_precision": 0.98, "new_people_recall": 0.7,
       "bcubed_f": 0.90}


def test_gate_rules():
    report = gate(RAW, dict(RAW))
    assert not report.promoted and any(r.startswith("no gain") for r in report.reasons)  # equal is not enough
    better = {**RAW, "recall": 0.9}
    report = gate(RAW, better)
    assert isinstance(report, GateReport) and report.promoted and report.reasons[0].startswith("promoted")
    assert report.failing == []
    worse_precision = {**better, "precision": 0.985}
    report = gate(RAW, worse_precision, tolerance=0.05)  # tolerance never excuses a precision drop
    assert not report.promoted
    assert any("naming precision" in r and "WORSE" in r for r in report.failing)
    one_more_stranger = {**better, "strangers_named": 3}
    report = gate(RAW, one_more_stranger)
    assert not report.promoted and any("strangers named" in r and "WORSE" in r for r in report.failing)
    slightly_lower_recall = {**RAW, "recall": 0.79, "new_people_recall": 0.8}
    assert not gate(RAW, slightly_lower_recall).promoted
    assert gate(RAW, slightly_lower_recall, tolerance=0.02).promoted
    unmeasured = {**better, "new_people_recall": None}
    report = gate(RAW, unmeasured)
    assert not report.promoted and any("not measured" in r for r in report.failing)


def test_gate_says_where_unknown_faces_are_clustered():
    assert gate(RAW, {**RAW, "recall": 0.9, "bcubed_f": 0.899}).use_for_clustering  # within 0.002
    report = gate(RAW, {**RAW, "recall": 0.9, "bcubed_f": 0.89})
    assert report.promoted and not report.use_for_clustering
    assert any("raw space" in r for r in report.reasons if r.startswith("clustering"))


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
        assert sum(ids[i] == p for i in tr) >= 1
    assert [a.tolist() for a in split_for_gate(ids, groups, seed=0)] == [a.tolist() for a in (tr, known, unseen)]


@pytest.mark.parametrize(
    "ids,missing",
    [
        ([f"p{i}" for i in range(10)], "held-out labelled faces"),  # ten people, one label each: nothing to test on
        (["a"] * 6 + ["b"] * 6 + ["c"] * 6, "labelled people held out as strangers"),  # too few people
    ],
)
def test_below_the_gate_minimum_is_not_enough_labels_with_what_is_missing(ids, missing):
    with pytest.raises(NotEnoughLabels) as err:
        gate_split(ids, None, 0)
    assert any(missing in m for m in err.value.missing), err.value.missing
    X = np.random.default_rng(0).normal(size=(len(ids), DIM)).astype(np.float32)
    with pytest.raises(NotEnoughLabels):
        run_gate(X, ids, TrainConfig(**FAST))
    gate_split(["a"] * 6 + ["b"] * 6 + ["c"] * 6, None, 0, GateMinimum(named_people=1, test_faces=2, stranger_people=2))


def test_run_gate_end_to_end_trains_only_on_training_faces_and_their_copies():
    X, y = make_people(12, 6, noise=1.5, seed=8)
    rng = np.random.default_rng(2)
    copies = np.repeat(X, 2, axis=0) + rng.normal(size=(len(X) * 2, DIM)).astype(np.float32) * 0.002
    source = np.repeat(np.arange(len(X)), 2)
    report, head = run_gate(X, y, TrainConfig(epochs=5, batch_size=32, hidden=64), augmented=copies,
                            augmented_source=source, unlabelled=rng.normal(size=(100, DIM)).astype(np.float32),
                            raw_bar=0.4, raw_floor=0.3, cluster_threshold=0.4)
    assert isinstance(head, TrainResult) and head.people < 12  # held-out people never reach training
    assert head.augmented_faces == 2 * head.faces  # copies of held-out faces were dropped
    for side in (report.raw, report.projected):
        assert set(RAW) <= side.keys() and side["raw_floor"] == 0.3
    assert report.reasons and isinstance(report.promoted, bool)


def test_gate_report_can_go_into_checkpoint_meta(tmp_path, small_result):
    report = gate(RAW, dict(RAW))
    _, side = save_checkpoint(small_result, tmp_path, "w600k_mbf", 1, {"validation": report})
    stored = json.loads(side.read_text())["validation"]
    assert stored["promoted"] is False and stored["raw"] == RAW and stored["reasons"] == report.reasons
