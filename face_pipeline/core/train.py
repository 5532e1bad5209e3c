"""Training a small projection head on top of the frozen ArcFace embeddings, and deciding whether to use it.

The recogniser (w600k_mbf) is frozen: its 512-d embeddings were trained on celebrities, not on the user's people.
A head ``512 -> 256 -> ReLU -> 128 -> L2-normalise`` trained with a triplet loss on the user's labels can pull
each person's faces together and push look-alikes apart. It can also *overfit* to a few hundred labelled faces
and make the space worse for faces it has not seen, and worst of all for people nobody has labelled yet (which
is what clustering of unknown faces works on). So a head is never used just because training finished: the
gate (``split_for_gate`` -> ``evaluate_space`` -> ``gate``, or ``run_gate`` for all of it) compares the raw
512-d space with the projected space on held-out faces and held-out *people*, each space with its own
calibrated thresholds, and promotes only a head that is not worse on any measure.

Design notes (why, not what):

* Inputs are L2-normalised before the head, in training and in ``project`` alike: ArcFace encodes identity in
  the direction, while the norm mostly tracks image quality; the rest of the pipeline compares by cosine.
* Batches are P people x K faces ("PK batches", Hermans et al. 2017), so every anchor has positives and many
  negatives inside the batch, which batch-hard / semi-hard mining needs.
* Distances are Euclidean on the unit sphere (``sqrt(2 - 2 cos)``), so ``margin=0.2`` means what it means in
  FaceNet / batch-hard papers.
* torch is imported inside the functions that need it so ``import face_pipeline.core.train`` stays cheap for
  the Dagster code location and the CLI.
* Training is seeded and runs with deterministic algorithms, on a forked RNG so the caller's global torch RNG
  is untouched, and with one intra-op thread on CPU: the matrices are tiny (batch 128 x 512), where a second
  thread costs more in synchronisation than it gains on our 2 shared cores, and a fixed thread count keeps the
  float reduction order - hence the weights - identical from run to run.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Hashable, Mapping, Sequence

import numpy as np

from face_pipeline.core.metrics import assignment_score, bcubed_prf, noise_as_singletons

if TYPE_CHECKING:  # pragma: no cover - typing only; torch is imported lazily at run time
    import torch

CHECKPOINT_PREFIX = "face_projection"
RECOMMENDED_PEOPLE = 5
RECOMMENDED_FACES = 5
MINING_STRATEGIES = ("batch_hard", "semi_hard")


class NotEnoughLabels(Exception):
    """Too few labelled faces to learn anything: the message says what is there and what is needed."""


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-3
    margin: float = 0.2
    seed: int = 0
    hidden: int = 256
    out_dim: int = 128
    mining: str = "batch_hard"  # or "semi_hard"
    device: str | None = None  # None: cuda when available, else cpu
    faces_per_person_in_batch: int = 4  # K of the P x K batches

    def __post_init__(self) -> None:
        if self.mining not in MINING_STRATEGIES:
            raise ValueError(f"mining must be one of {MINING_STRATEGIES}, not {self.mining!r}")
        if self.faces_per_person_in_batch < 2:
            raise ValueError("faces_per_person_in_batch must be >= 2: an anchor needs a positive in its batch")
        if self.batch_size < 2 * self.faces_per_person_in_batch:
            raise ValueError("batch_size must hold at least two people (2 x faces_per_person_in_batch)")
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> "TrainConfig":
        """Rebuild from a checkpoint's ``config`` (unknown keys from newer versions are ignored)."""
        known = TrainConfig.__dataclass_fields__.keys()
        return TrainConfig(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainResult:
    state_dict: dict  # name -> cpu tensor
    config: TrainConfig
    losses: list[float]  # mean triplet loss per epoch
    people: int
    faces: int
    seconds: float
    device: str
    triplets: int = 0  # triplets (anchor, positive, negative) that went through the loss, all epochs together

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")

    @property
    def triplets_per_second(self) -> float:
        return self.triplets / self.seconds if self.seconds > 0 else float("nan")


# --------------------------------------------------------------------------------------------------------------
# Label checks
# --------------------------------------------------------------------------------------------------------------


def _labelled_counts(person_ids: Sequence[Hashable | None]) -> Counter:
    return Counter(p for p in person_ids if p is not None)


def check_enough(person_ids: Sequence[Hashable | None], min_people: int = 2, min_faces: int = 2) -> None:
    """Raise ``NotEnoughLabels`` unless at least ``min_people`` people have ``min_faces`` labelled faces each.

    A triplet needs two faces of one person and one of another, hence the hard minimum of 2 x 2; below the
    recommended amount training runs but the gate will rarely find a head that generalises, and the message
    says so, because the user's fix (label more) is the same either way. ``None`` ids (unlabelled) are ignored.
    """
    counts = _labelled_counts(person_ids)
    usable = sorted(n for n in counts.values() if n >= min_faces)
    if len(usable) >= min_people:
        return
    have = (
        f"{sum(counts.values())} labelled faces of {len(counts)} people, "
        f"{len(usable)} of them with >= {min_faces} faces"
    )
    raise NotEnoughLabels(
        f"not enough labels to train the projection head: {have}. Minimum: >= {min_people} people with "
        f">= {min_faces} faces each; recommended: >= {RECOMMENDED_FACES} faces for each of "
        f">= {RECOMMENDED_PEOPLE} people."
    )


# --------------------------------------------------------------------------------------------------------------
# Model, loss, training
# --------------------------------------------------------------------------------------------------------------


def _build_head(in_dim: int, hidden: int, out_dim: int) -> "torch.nn.Module":
    from collections import OrderedDict

    import torch.nn as nn

    return nn.Sequential(
        OrderedDict(fc1=nn.Linear(in_dim, hidden), relu=nn.ReLU(), fc2=nn.Linear(hidden, out_dim))
    )


def _head_from_state(state_dict: Mapping[str, "torch.Tensor"]) -> "torch.nn.Module":
    """The head's sizes are read off the weights, so a checkpoint needs no separate shape metadata."""
    try:
        hidden, in_dim = state_dict["fc1.weight"].shape
        out_dim = state_dict["fc2.weight"].shape[0]
    except KeyError as exc:
        raise ValueError(f"not a projection-head state dict (missing {exc}); keys: {sorted(state_dict)}") from None
    head = _build_head(int(in_dim), int(hidden), int(out_dim))
    head.load_state_dict(dict(state_dict))
    return head.eval()


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _pairwise_distances(z: "torch.Tensor") -> "torch.Tensor":
    """Euclidean distances between unit vectors; clamped so sqrt has a finite gradient at 0 (same face twice)."""
    import torch

    return torch.sqrt((2.0 - 2.0 * (z @ z.T)).clamp_min(1e-12))


def _triplet_loss(z: "torch.Tensor", labels: "torch.Tensor", margin: float, mining: str) -> tuple["torch.Tensor", int]:
    """Mean triplet hinge over the mined triplets of one PK batch, and how many triplets that was.

    batch_hard: per anchor the farthest positive and the nearest negative (one triplet per anchor).
    semi_hard: per (anchor, positive) pair the nearest negative that is still farther than the positive
    (FaceNet); when none is, the farthest-reaching negative below it, as in TF-Addons' semihard loss.
    """
    import torch

    d = _pairwise_distances(z)
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=z.device)
    pos = same & ~eye
    neg = ~same
    inf = torch.tensor(float("inf"), device=z.device, dtype=z.dtype)
    if mining == "batch_hard":
        valid = pos.any(1) & neg.any(1)
        hardest_pos = torch.where(pos, d, torch.zeros_like(d)).max(1).values
        hardest_neg = torch.where(neg, d, inf).min(1).values
        hinge = torch.relu(hardest_pos - hardest_neg + margin)[valid]
    else:
        a_idx, p_idx = torch.nonzero(pos, as_tuple=True)
        d_ap = d[a_idx, p_idx][:, None]  # (T, 1)
        d_an = d[a_idx]  # (T, B)
        neg_rows = neg[a_idx]
        farther = neg_rows & (d_an > d_ap)
        semi = torch.where(farther, d_an, inf).min(1).values
        fallback = torch.where(neg_rows, d_an, -inf).max(1).values
        chosen = torch.where(farther.any(1), semi, fallback)
        keep = neg_rows.any(1)
        hinge = torch.relu(d_ap[:, 0] - chosen + margin)[keep]
    if hinge.numel() == 0:
        return z.sum() * 0.0, 0
    return hinge.mean(), int(hinge.numel())


def _resolve_device(requested: str | None) -> str:
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class _PKSampler:
    """P people x K faces per batch, seeded; people with fewer than K faces give all they have.

    People are drawn from a shuffled cycle rather than independently, so over an epoch every person appears
    about equally often and none is starved by chance - with a dozen people, chance alone would skip some.
    """

    def __init__(self, codes: np.ndarray, k: int, batch_size: int, rng: np.random.Generator) -> None:
        self.rng = rng
        self.k = k
        self.members = [np.flatnonzero(codes == c) for c in range(int(codes.max()) + 1)]
        self.p = max(2, min(len(self.members), batch_size // k))
        self._cycle: list[int] = []

    def _next_people(self) -> list[int]:
        chosen: list[int] = []
        while len(chosen) < self.p:
            if not self._cycle:
                self._cycle = list(self.rng.permutation(len(self.members)))
            person = int(self._cycle.pop())
            if person not in chosen:
                chosen.append(person)
        return chosen

    def batch(self) -> np.ndarray:
        parts = []
        for person in self._next_people():
            faces = self.members[person]
            take = min(self.k, len(faces))
            parts.append(faces if take == len(faces) else self.rng.choice(faces, size=take, replace=False))
        return np.concatenate(parts)

    def batches_per_epoch(self, n_faces: int) -> int:
        """An epoch draws about as many anchors as there are faces (so epochs mean the same at any scale)."""
        return max(1, math.ceil(n_faces / (self.p * self.k)))


def train_projection_head(
    embeddings: np.ndarray,
    person_ids: Sequence[Hashable | None],
    config: TrainConfig | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train the head with a triplet loss on PK batches; ``progress(epoch, mean_loss)`` after each epoch.

    Faces with ``None`` ids and people with a single face are left out (a lone face can never be a positive
    pair). Same inputs and config give bit-identical weights on CPU. Raises ``NotEnoughLabels``.
    """
    import torch

    config = config or TrainConfig()
    X = np.asarray(embeddings, dtype=np.float32)
    if X.ndim != 2 or len(X) != len(person_ids):
        raise ValueError(f"embeddings must be (N, D) with N == len(person_ids); got {X.shape} and {len(person_ids)}")
    check_enough(person_ids)
    counts = _labelled_counts(person_ids)
    keep_people = sorted((p for p, n in counts.items() if n >= 2), key=repr)
    code_of = {p: i for i, p in enumerate(keep_people)}
    rows = np.array([i for i, p in enumerate(person_ids) if p in code_of], dtype=np.int64)
    codes = np.array([code_of[person_ids[i]] for i in rows], dtype=np.int64)
    X = _unit(X[rows])

    device = _resolve_device(config.device)
    rng = np.random.default_rng(config.seed)
    sampler = _PKSampler(codes, config.faces_per_person_in_batch, config.batch_size, rng)
    n_batches = sampler.batches_per_epoch(len(rows))

    prev_deterministic = torch.are_deterministic_algorithms_enabled()
    prev_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_threads = torch.get_num_threads()
    losses: list[float] = []
    triplets = 0
    start = time.perf_counter()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device == "cpu":
            torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            head = _build_head(X.shape[1], config.hidden, config.out_dim)
        head = head.to(device).train()
        optimiser = torch.optim.Adam(head.parameters(), lr=config.learning_rate)
        X_t = torch.from_numpy(X).to(device)
        y_t = torch.from_numpy(codes).to(device)
        for epoch in range(1, config.epochs + 1):
            total = torch.zeros((), device=device)
            for _ in range(n_batches):
                idx = torch.from_numpy(sampler.batch()).to(device)
                z = torch.nn.functional.normalize(head(X_t[idx]), dim=1)
                loss, n_triplets = _triplet_loss(z, y_t[idx], config.margin, config.mining)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += loss.detach()
                triplets += n_triplets
            losses.append(float(total) / n_batches)  # one sync per epoch, not per batch
            if progress is not None:
                progress(epoch, losses[-1])
    finally:
        torch.use_deterministic_algorithms(prev_deterministic, warn_only=prev_warn_only)
        torch.set_num_threads(prev_threads)
    seconds = time.perf_counter() - start
    state = {k: v.detach().to("cpu").clone() for k, v in head.state_dict().items()}
    return TrainResult(
        state_dict=state,
        config=config,
        losses=losses,
        people=len(keep_people),
        faces=len(rows),
        seconds=seconds,
        device=device,
        triplets=triplets,
    )


def project(state_dict_or_result: TrainResult | Mapping[str, Any], embeddings: np.ndarray, batch: int = 8192) -> np.ndarray:
    """Map (N, D) embeddings through a trained head: (N, out_dim) float32 unit vectors, on CPU.

    CPU on purpose: the head is two small matrices, so moving data to a GPU costs more than the maths.
    """
    import torch

    state = state_dict_or_result.state_dict if isinstance(state_dict_or_result, TrainResult) else state_dict_or_result
    head = _head_from_state(state)
    in_dim = head.fc1.in_features
    out_dim = head.fc2.out_features
    X = np.asarray(embeddings, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != in_dim:
        raise ValueError(f"embeddings must be (N, {in_dim}); got {X.shape}")
    out = np.empty((len(X), out_dim), dtype=np.float32)
    with torch.inference_mode():
        for lo in range(0, len(X), batch):
            z = head(torch.from_numpy(_unit(X[lo : lo + batch])))
            out[lo : lo + batch] = torch.nn.functional.normalize(z, dim=1).numpy()
    return out


# --------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------


def checkpoint_paths(folder: Path, model_name: str, version: int) -> tuple[Path, Path]:
    stem = f"{CHECKPOINT_PREFIX}_{model_name}_v{int(version)}"
    folder = Path(folder)
    return folder / f"{stem}.pt", folder / f"{stem}.json"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"cannot store {type(value).__name__} in checkpoint metadata")


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> None:
    """Write to a temp file in the same folder, then rename: a reader never sees half a checkpoint."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    result: TrainResult, folder: Path, model_name: str, version: int, extra_meta: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``face_projection_{model_name}_v{version}.pt`` (weights + config + meta) and a ``.json`` sidecar.

    The sidecar lets the UI, Dagster metadata and humans read what a head is (people, faces, loss, validation
    metrics, which embedding model it expects) without torch. ``extra_meta`` (e.g. ``{"validation": ...}``)
    is merged in; it may not overwrite the standard fields. An existing version is never overwritten: a
    version number must always name the same weights, or stored projections would silently disagree.
    """
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pt_path, json_path = checkpoint_paths(folder, model_name, version)
    if pt_path.exists() or json_path.exists():
        raise FileExistsError(f"checkpoint version {version} of {model_name} already exists in {folder}")
    in_dim = int(result.state_dict["fc1.weight"].shape[1])
    meta: dict[str, Any] = {
        "version": int(version),
        "embedding_model": model_name,
        "embedding_dim": in_dim,
        "out_dim": int(result.state_dict["fc2.weight"].shape[0]),
        "people": result.people,
        "faces": result.faces,
        "epochs": len(result.losses),
        "final_loss": result.final_loss,
        "losses": list(result.losses),
        "seconds": result.seconds,
        "device": result.device,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "config": asdict(result.config),
    }
    clash = sorted(set(extra_meta or {}) & set(meta))
    if clash:
        raise ValueError(f"extra_meta may not overwrite standard checkpoint fields: {clash}")
    meta.update(extra_meta or {})
    meta = json.loads(json.dumps(meta, default=_json_default))  # plain JSON types, also inside the .pt
    payload = {"state_dict": result.state_dict, "config": meta["config"], "meta": meta}
    _atomic_write(pt_path, lambda fh: torch.save(payload, fh), "wb")
    _atomic_write(json_path, lambda fh: json.dump(meta, fh, indent=2, sort_keys=True), "w")
    return pt_path, json_path


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    """(state_dict, meta) from a ``.pt`` (or its ``.json`` sidecar's path). Loaded with ``weights_only=True``,
    so a tampered file cannot run code; the sidecar wins for meta when present (it is what humans edit/read)."""
    import torch

    path = Path(path)
    pt_path = path.with_suffix(".pt")
    payload = torch.load(pt_path, map_location="cpu", weights_only=True)
    meta = dict(payload.get("meta") or {})
    json_path = pt_path.with_suffix(".json")
    if json_path.exists():
        meta = json.loads(json_path.read_text())
    return dict(payload["state_dict"]), meta


def next_version(folder: str | Path, model_name: str) -> int:
    """1 + the highest version of ``model_name`` in ``folder`` (.pt or .json), 1 when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        return 1
    pattern = re.compile(rf"^{CHECKPOINT_PREFIX}_{re.escape(model_name)}_v(\d+)\.(?:pt|json)$")
    versions = [int(m.group(1)) for f in folder.iterdir() if (m := pattern.match(f.name))]
    return max(versions, default=0) + 1


# --------------------------------------------------------------------------------------------------------------
# The gate
# --------------------------------------------------------------------------------------------------------------

#: measures compared by ``gate``: name -> (human name, must not drop at all)
GATE_MEASURES: dict[str, tuple[str, bool]] = {
    "precision": ("assignment precision (known people's held-out faces + strangers)", True),
    "recall": ("assignment recall (known people's held-out faces)", False),
    "new_people_precision": ("assignment precision of people labelled after training", True),
    "new_people_recall": ("assignment recall of people labelled after training", False),
    "bcubed_f": ("BCubed F of clustering unseen people", False),
}


@dataclass
class GateReport:
    raw: dict
    projected: dict
    promoted: bool
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def split_for_gate(
    person_ids: Sequence[Hashable],
    groups: Sequence[Hashable] | None,
    seed: int,
    holdout_people_frac: float = 0.25,
    holdout_face_frac: float = 0.3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train_idx, holdout_known_idx, holdout_people_idx) into ``person_ids``.

    Whole people are held out to measure what matters most and fails most often: faces of people the head
    never saw (new people, clustering of unknowns, impostors for assignment). Some faces of the trained people
    are held out to measure assignment of new photos of known people. ``groups`` (e.g. photo or event ids)
    keeps every face of a group on one side, so near-duplicate shots cannot leak between train and test.
    At least 2 people stay in training, each with >= 2 training faces, and one person is held out whenever
    there are 3 or more (so the unseen-people check exists even for small label sets).
    """
    ids = list(person_ids)
    n = len(ids)
    grp: list = list(range(n)) if groups is None else list(groups)
    if len(grp) != n:
        raise ValueError("groups must be as long as person_ids")
    grp = [("face", i) if g is None else g for i, g in enumerate(grp)]  # no group id: a group of its own
    rng = np.random.default_rng(seed)
    counts = _labelled_counts(ids)
    people = sorted(counts, key=repr)
    eligible = [p for p in people if counts[p] >= 2]

    n_out = int(round(holdout_people_frac * len(people))) if holdout_people_frac > 0 else 0
    if holdout_people_frac > 0 and len(eligible) >= 3:
        n_out = max(n_out, 1)
    held_people: set = set()
    kept_eligible = len(eligible)
    for p in (people[i] for i in rng.permutation(len(people))):
        if len(held_people) >= n_out:
            break
        if counts[p] >= 2:
            if kept_eligible <= 2:  # training needs two people with a positive pair each
                continue
            kept_eligible -= 1
        held_people.add(p)
    held_people_idx = np.array([i for i, p in enumerate(ids) if p in held_people], dtype=np.int64)

    # hold out ~holdout_face_frac of each trained person's faces, whole groups at a time, never below 2 left
    trained = [i for i, p in enumerate(ids) if p is not None and p not in held_people]
    target = {p: min(int(round(holdout_face_frac * counts[p])), counts[p] - 2) for p in counts if p not in held_people}
    by_group: dict[Hashable, list[int]] = {}
    for i in trained:
        by_group.setdefault(grp[i], []).append(i)
    group_keys = list(by_group)
    taken: Counter = Counter()
    known_out: list[int] = []
    for gi in rng.permutation(len(group_keys)):
        members = by_group[group_keys[gi]]
        need = Counter(ids[i] for i in members)
        if all(taken[p] + c <= target[p] for p, c in need.items()):
            taken.update(need)
            known_out.extend(members)
    known_set = set(known_out)
    train_idx = np.array([i for i in trained if i not in known_set], dtype=np.int64)
    return train_idx, np.array(sorted(known_set), dtype=np.int64), held_people_idx


def _as_labels(y: Sequence[Hashable]) -> list:
    return list(y.tolist() if isinstance(y, np.ndarray) else y)


#: Threshold grid for assignment calibration in *both* spaces, uniform in chord distance d = sqrt(2 - 2 cos)
#: (0.02 .. 1.55, i.e. cos 0.9998 .. -0.2) rather than in cosine: a triplet head with margin 0.2 (a distance)
#: often packs everything into a narrow cone where the right threshold is 0.97 or 0.99, which a 0.01 cosine
#: grid cannot resolve, while raw ArcFace needs the usual ~0.01 steps around 0.3-0.6 - and gets them here.
ASSIGN_GRID: tuple[float, ...] = tuple(sorted({round(1.0 - d * d / 2.0, 5) for d in (k / 100 for k in range(2, 156))}))


def calibrate_space_threshold(
    X: np.ndarray,
    y: Sequence[Hashable],
    *,
    kind: str = "assign",
    target_precision: float = 0.995,
    groups: Sequence[Hashable] | None = None,
    seed: int = 0,
    grid: Sequence[float] | None = None,
) -> float:
    """A similarity threshold for one embedding space, from labelled faces of that space only.

    Each space needs its own: a triplet head spreads similarities differently from raw ArcFace, so a threshold
    tuned for one is meaningless in the other. ``kind="assign"`` delegates to ``assign.calibrate_threshold``
    (simulated known/unknown people, lowest threshold keeping ``target_precision``) on ``ASSIGN_GRID``;
    ``kind="cluster"`` picks the face-face link threshold whose clustering of these faces has the best BCubed F.

    Pass faces that are out-of-sample for whatever made the space (``run_gate`` does): a head's own training
    faces sit unnaturally tight and far from each other's people, so calibrating on them gives a threshold that
    lets strangers through (measured on the dev set: in-sample impostor p99 0.42 vs 0.68 for unseen people).
    """
    X = _unit(np.asarray(X, dtype=np.float32))
    y = _as_labels(y)
    if kind == "assign":
        from face_pipeline.core.assign import calibrate_threshold

        def run(points: Sequence[float]) -> float:
            g = None if groups is None else list(groups)
            return float(calibrate_threshold(X, y, groups=g, target_precision=target_precision, grid=points, seed=seed))

        if grid is not None:
            return run(grid)
        # Coarse-to-fine: each grid point re-scores every simulated query, so 150 points cost seconds even for
        # 100 faces. Every 5th point finds the region (with its whole upper tail checked); the same seeded folds
        # then resolve the four points just below it, which is where the answer lies.
        coarse_grid = ASSIGN_GRID[::5]
        j = ASSIGN_GRID.index(run(coarse_grid))
        return run(ASSIGN_GRID[max(0, j - 4) : j + 1])
    if kind == "cluster":
        return _calibrate_cluster(X, y, groups=groups, seed=seed)
    raise ValueError(f"kind must be 'assign' or 'cluster', not {kind!r}")


def _cluster_labels(X: np.ndarray, threshold: float, groups: Sequence[Hashable] | None, seed: int) -> np.ndarray:
    from face_pipeline.core.cluster import cluster_faces

    kwargs: dict[str, Any] = {"threshold": float(threshold), "seed": seed}
    if groups is not None:
        kwargs["groups"] = np.asarray(list(groups), dtype=object)
    return np.asarray(cluster_faces(np.asarray(X, dtype=np.float32), **kwargs))


def _bcubed_of_clustering(y: Sequence[Hashable], labels: np.ndarray) -> dict[str, float]:
    prf = bcubed_prf(list(y), noise_as_singletons(labels.tolist()))
    return {"bcubed_precision": prf.precision, "bcubed_recall": prf.recall, "bcubed_f": prf.f1}


def _calibrate_cluster(
    X: np.ndarray, y: Sequence[Hashable], *, groups: Sequence[Hashable] | None, seed: int, max_faces: int = 2000
) -> float:
    """Link threshold maximising BCubed F of ``cluster_faces`` on labelled faces (subsampled to ``max_faces``).

    Searching with the clusterer itself, rather than a pairwise-precision rule, accounts for chaining, k-NN
    and min-size effects of whatever method cluster.py uses. Candidates are similarity quantiles of the
    nearest-neighbour pairs, so the grid adapts to the space's own scale. Ties go to the higher (stricter)
    threshold: a split cluster costs a user one merge click, a merged one costs them untangling.
    """
    y = list(y)
    idx = np.arange(len(X))
    if len(idx) > max_faces:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_faces, replace=False))
    Xs, ys = X[idx], [y[i] for i in idx]
    gs = None if groups is None else [list(groups)[i] for i in idx]
    sims = Xs @ Xs.T
    np.fill_diagonal(sims, -np.inf)
    nn_sims = np.sort(sims, axis=1)[:, -min(5, len(Xs) - 1) :].ravel() if len(Xs) > 1 else np.array([0.5])
    nn_sims = nn_sims[np.isfinite(nn_sims)]
    candidates = np.unique(np.round(np.quantile(nn_sims, np.linspace(0.02, 0.98, 25)), 4))
    best_t, best_f = float(candidates[-1]), -1.0
    for t in candidates[::-1]:  # strict to loose, so ">" keeps the strictest of equals
        f = _bcubed_of_clustering(ys, _cluster_labels(Xs, float(t), gs, seed))["bcubed_f"]
        if f > best_f + 1e-12:
            best_t, best_f = float(t), f
    return best_t


def _assign_ids(X_gallery: np.ndarray, y_gallery: list, X_query: np.ndarray, threshold: float, strategy: str | None) -> list:
    from face_pipeline.core.assign import assign_faces, build_prototypes

    if len(X_query) == 0:
        return []
    protos = build_prototypes(X_gallery, y_gallery)
    kwargs: dict[str, Any] = {"threshold": float(threshold)}
    if strategy is not None:
        kwargs["strategy"] = strategy
    index = np.asarray(assign_faces(protos, X_query, **kwargs).person_index).tolist()
    return [protos.person_ids[j] if j >= 0 else None for j in index]


def evaluate_space(
    X_train: np.ndarray,
    y_train: Sequence[Hashable],
    X_known_test: np.ndarray,
    y_known_test: Sequence[Hashable],
    X_unseen: np.ndarray,
    y_unseen: Sequence[Hashable],
    threshold: float,
    cluster_threshold: float | None = None,
    *,
    strategy: str | None = None,
    new_labels_per_person: int = 3,
    seed: int = 0,
) -> dict:
    """Score one embedding space on held-out faces; every figure is a plain float/int (or None: not measured).

    Gated measures (see ``GATE_MEASURES``):

    * ``precision`` / ``recall``: prototypes from the training faces; known people's held-out faces *and* the
      unseen people's faces (strangers, which must stay unassigned) are assigned at ``threshold``
      (``metrics.assignment_score``: precision over all assignments, recall over the known faces).
    * ``new_people_precision`` / ``_recall``: the unseen people get ``new_labels_per_person`` labelled faces each
      (seeded) and join the gallery, and their other faces are assigned - a person labelled *after* the head
      was trained, which is the everyday case a head that only knows its training people gets wrong.
    * ``bcubed_f`` (with ``bcubed_precision`` / ``_recall``): the unseen people's faces clustered at
      ``cluster_threshold`` (calibrated on the training faces when None), as the unknown-faces stage does.

    Reported, not gated: ``known_precision`` / ``known_recall`` (held-out faces of known people only, no
    strangers), ``unseen_false_rate`` and ``known_bcubed_f`` (clustering of the known people's held-out faces).
    """
    y_train_l = _as_labels(y_train)
    y_known = _as_labels(y_known_test)
    y_unseen_l = _as_labels(y_unseen)
    dim = np.asarray(X_train).shape[1]
    Xtr = _unit(np.asarray(X_train, np.float32).reshape(-1, dim))
    Xk = _unit(np.asarray(X_known_test, np.float32).reshape(-1, dim))
    Xu = _unit(np.asarray(X_unseen, np.float32).reshape(-1, dim))
    known_people = set(y_train_l)

    assigned = _assign_ids(Xtr, y_train_l, np.concatenate([Xk, Xu]), threshold, strategy)
    score = assignment_score(y_known + y_unseen_l, assigned, known=known_people)
    known_only = assignment_score(y_known, assigned[: len(y_known)], known=known_people)
    out: dict[str, Any] = {
        "threshold": float(threshold),
        "precision": score.precision,
        "recall": score.recall if score.known_faces else None,  # no known test faces: not measured
        "assigned": score.assigned,
        "correct": score.correct,
        "known_faces": score.known_faces,
        "known_precision": known_only.precision,
        "known_recall": known_only.recall if known_only.known_faces else None,
        "unseen_faces": score.unknown_faces,
        "unseen_wrongly_assigned": score.false_assignments_of_unknown,
        "unseen_false_rate": score.unknown_false_rate,
        "unseen_people": len(set(y_unseen_l)),
    }

    # people labelled after training: a few labels each join the gallery, their other faces are queries
    rng = np.random.default_rng(seed)
    label_rows: list[int] = []
    for person in sorted(set(y_unseen_l), key=repr):
        rows = [i for i, p in enumerate(y_unseen_l) if p == person]
        if len(rows) >= 2:
            take = min(new_labels_per_person, len(rows) - 1)
            label_rows.extend(int(r) for r in rng.choice(rows, size=take, replace=False))
    is_label = np.zeros(len(y_unseen_l), dtype=bool)
    is_label[label_rows] = True
    labelled_people = {y_unseen_l[r] for r in label_rows}
    queries = np.array(
        [i for i, p in enumerate(y_unseen_l) if not is_label[i] and p in labelled_people], dtype=np.int64
    )
    if len(queries):
        gallery_X = np.concatenate([Xtr, Xu[is_label]])
        gallery_y = y_train_l + [y_unseen_l[i] for i in np.flatnonzero(is_label)]
        new_truth = [y_unseen_l[i] for i in queries]
        new = assignment_score(new_truth, _assign_ids(gallery_X, gallery_y, Xu[queries], threshold, strategy), set(new_truth))
        out.update(new_people_precision=new.precision, new_people_recall=new.recall, new_people_queries=int(len(queries)))
    else:
        out.update(new_people_precision=None, new_people_recall=None, new_people_queries=0)

    if cluster_threshold is None and (len(y_unseen_l) or len(y_known)):
        cluster_threshold = calibrate_space_threshold(Xtr, y_train_l, kind="cluster", seed=seed)
    out["cluster_threshold"] = None if cluster_threshold is None else float(cluster_threshold)
    if len(y_unseen_l):
        out.update(_bcubed_of_clustering(y_unseen_l, _cluster_labels(Xu, cluster_threshold, None, seed)))
    else:
        out.update(bcubed_precision=None, bcubed_recall=None, bcubed_f=None)
    out["known_bcubed_f"] = (
        _bcubed_of_clustering(y_known, _cluster_labels(Xk, cluster_threshold, None, seed))["bcubed_f"] if len(y_known) else None
    )
    return out


def gate(raw_metrics: Mapping[str, Any], proj_metrics: Mapping[str, Any], tolerance: float = 0.0) -> GateReport:
    """Promote the projected space only if it is not worse than raw on any measure.

    Precision may not drop at all (a wrong name on a face is the one error users notice and resent); recall
    and BCubed F may drop by at most ``tolerance``. A measure missing from either side blocks promotion: not
    measured is not the same as not worse. Every measure gets a reason line, pass or fail, for the UI.
    """
    eps = 1e-12
    reasons: list[str] = []
    ok = True
    for key, (name, strict) in GATE_MEASURES.items():
        r, p = raw_metrics.get(key), proj_metrics.get(key)
        if r is None or p is None or (isinstance(r, float) and math.isnan(r)) or (isinstance(p, float) and math.isnan(p)):
            ok = False
            reasons.append(f"{name}: not measured (raw={r}, projected={p}), so the head cannot be shown not to hurt it")
            continue
        allowed = 0.0 if strict else tolerance
        worse = p < r - allowed - eps
        verdict = "WORSE" if worse else ("better" if p > r + eps else "equal")
        rule = "must not drop" if strict else f"may drop by <= {tolerance:.3f}"
        reasons.append(f"{name}: raw {r:.4f} -> projected {p:.4f} ({verdict}; {rule})")
        ok &= not worse
    reasons.insert(0, "promoted: projected space is not worse on any measure" if ok else "refused: projected space is worse or unmeasured")
    return GateReport(raw=dict(raw_metrics), projected=dict(proj_metrics), promoted=ok, reasons=reasons)


def run_gate(
    embeddings: np.ndarray,
    person_ids: Sequence[Hashable],
    config: TrainConfig | None = None,
    *,
    groups: Sequence[Hashable] | None = None,
    tolerance: float = 0.0,
    target_precision: float = 0.995,
    holdout_people_frac: float = 0.25,
    holdout_face_frac: float = 0.3,
    calibration_people_frac: float = 0.2,
    calibration_face_frac: float = 0.25,
    raw_threshold: float | None = None,
    raw_cluster_threshold: float | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[GateReport, TrainResult]:
    """The whole check in one call: split, train a candidate head, calibrate each space, evaluate, gate.

    Labelled people and faces are split three ways (all seeded, groups kept whole):

    * test: ``holdout_people_frac`` of the people (never seen) and ``holdout_face_frac`` of the others' faces;
    * calibration: ``calibration_people_frac`` of the remaining people and ``calibration_face_frac`` of the
      remaining faces of the rest - kept out of head training, so the projected space's thresholds are set on
      faces *and strangers* the head has not fitted, as in production;
    * fit: the rest, which trains the head. Evaluation prototypes use the fit people's fit + calibration faces.

    Raw-space thresholds are ``raw_threshold`` / ``raw_cluster_threshold`` when given (pass the production
    settings to compare against what actually runs), else calibrated on *all* non-test faces: nothing was
    fitted in raw space, so all of them are honest calibration data there. Raw thus gets the better-estimated
    threshold - a bias towards the status quo, which is the side a gate should err on.

    The candidate returned is exactly the head that was measured, and ``report.projected["threshold"]`` /
    ``["cluster_threshold"]`` are its calibrated thresholds: ship those together, or the gate's numbers no
    longer describe what runs. Retraining on every label afterwards would need its own gate run.
    """
    config = config or TrainConfig()
    ids = list(person_ids)
    check_enough(ids)
    groups_l = None if groups is None else list(groups)
    X = _unit(np.asarray(embeddings, dtype=np.float32))
    y = np.asarray(ids, dtype=object)
    train_idx, known_idx, unseen_idx = split_for_gate(ids, groups_l, config.seed, holdout_people_frac, holdout_face_frac)
    sub_groups = None if groups_l is None else [groups_l[i] for i in train_idx]
    fit_rel, cal_face_rel, cal_people_rel = split_for_gate(
        [ids[i] for i in train_idx], sub_groups, config.seed + 1, calibration_people_frac, calibration_face_frac
    )
    fit_idx = train_idx[fit_rel]
    cal_idx = np.sort(np.concatenate([train_idx[cal_face_rel], train_idx[cal_people_rel]]))
    proto_idx = np.sort(np.concatenate([fit_idx, train_idx[cal_face_rel]]))
    candidate = train_projection_head(X[fit_idx], [ids[i] for i in fit_idx], config, progress)
    P = project(candidate, X)
    cal_ok = len(set(y[cal_idx].tolist())) >= 2
    if not cal_ok:  # too few labels to spare: calibrate on fitted faces (optimistic for projected), and say so
        cal_idx = proto_idx

    def measure(space: np.ndarray, cal: np.ndarray, thr: float | None, cthr: float | None) -> dict:
        cal_groups = None if groups_l is None else [groups_l[i] for i in cal]
        if thr is None:
            thr = calibrate_space_threshold(
                space[cal], y[cal], kind="assign", target_precision=target_precision, groups=cal_groups, seed=config.seed
            )
        if cthr is None:
            cthr = calibrate_space_threshold(space[cal], y[cal], kind="cluster", groups=cal_groups, seed=config.seed)
        m = evaluate_space(
            space[proto_idx], y[proto_idx], space[known_idx], y[known_idx], space[unseen_idx], y[unseen_idx], thr, cthr
        )
        m.update(fit_faces=int(len(fit_idx)), fit_people=int(candidate.people), calibration_faces=int(len(cal)))
        return m

    raw = measure(X, train_idx, raw_threshold, raw_cluster_threshold)
    proj = measure(P, cal_idx, None, None)
    proj["calibrated_on_fitted_faces"] = not cal_ok
    report = gate(raw, proj, tolerance)
    if not cal_ok:
        report.reasons.append("warning: too few labels to keep calibration faces apart; thresholds are optimistic")
    return report, candidate


def plot_losses(losses: Sequence[float]) -> bytes:
    """PNG of the per-epoch loss, for Dagster metadata. Uses the Agg canvas directly (not pyplot), so it
    neither needs a display nor changes the process-wide matplotlib backend."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    epochs = list(range(1, len(losses) + 1))
    ax.plot(epochs, list(losses), marker="o", markersize=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("triplet loss")
    ax.set_title("projection head training")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
