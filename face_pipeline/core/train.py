"""Training a small head on top of the frozen ArcFace embeddings, and deciding whether it may be used.

What is trained, and where it is used (why it is built this way):

The recogniser (w600k_mbf) is frozen; its 512-d space was learnt on celebrities and is already good at "is this
anyone I know at all": an impostor pair of faces almost never reaches cosine 0.35. An earlier design trained a
whole new 128-d space on the user's labels and used it for everyone; it overfitted to the labelled people, and
clustering of people nobody had labelled dropped from BCubed F 0.96 to 0.80 in it. So now:

* **The head is a residual map that starts as the identity** (``x + W2 relu(W1 x)``, ``W2 = 0`` at the start,
  same 512 dimensions, L2-normalised) and is trained with a triplet loss on the named people's *human* labels
  and augmentations of them, plus a penalty on how far it moves *unlabelled* faces (``drift_weight``). Where
  the user labelled nothing, it stays raw space; cosines keep raw ArcFace's scale, so a raw threshold means
  the same thing after the head.
* **It is used only to decide among named people** (:func:`name_faces`): whether a face is anyone named at all
  stays a raw-space decision. A named person is a candidate for a face only when the face's *raw* cosine to
  them clears the impostor floor; the head may then re-rank the candidates, or name a face that clears the
  raw floor for exactly one named person but not the raw naming bar, when the head's score for that person
  reaches the bar. A face whose raw similarity lies inside the impostor range can never be named by the head.
* **Positives are human labels only** (manual and cluster labels, confirmed suggestions - which are human
  labels) and flipped / cropped / blurred copies of those faces (:func:`augment_crop`, re-embedded by the
  product's recogniser). Faces automation named are never training data: their names are the head's own
  output, and training on them would make it confirm its own mistakes.
* **A gate decides** (:func:`run_gate`): on held-out labelled faces and held-out *people* (strangers to the
  head) it compares the raw naming rule with the head's rule on the same prototypes - precision, recall,
  strangers named (count), people labelled after training - and promotes only a head that is not worse on
  any of them and better on at least one. Below :class:`GateMinimum` it does not guess: the outcome is
  ``not_enough_labels``, with what is missing, and nothing is promoted. Clustering of unknown faces keeps
  raw space unless the held-out people cluster as well (BCubed F within ``CLUSTER_TOLERANCE``) in the head's.

Implementation notes:

* Inputs are L2-normalised before the head, in training and in ``project`` alike: ArcFace encodes identity in
  the direction, while the norm mostly tracks image quality; the rest of the pipeline compares by cosine.
* Batches are P people x K faces ("PK batches", Hermans et al. 2017), so every anchor has positives and many
  negatives inside the batch, which batch-hard / semi-hard mining needs. Augmented copies are faces of their
  person, which is what gives a person with one label a positive pair.
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
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Hashable, Mapping, Sequence

import numpy as np

from face_pipeline.core.metrics import bcubed_prf, noise_as_singletons

if TYPE_CHECKING:  # pragma: no cover - typing only; torch is imported lazily at run time
    import torch

CHECKPOINT_PREFIX = "face_projection"
RECOMMENDED_PEOPLE = 5
RECOMMENDED_FACES = 5
MINING_STRATEGIES = ("batch_hard", "semi_hard")
ARCHITECTURES = ("residual", "mlp")
LOSSES = ("prototype", "triplet")
#: Unknown people's clustering may move to the head's space only if its BCubed F there is at most this much lower
#: (the quality issue's bound for "does not hurt unknown people").
CLUSTER_TOLERANCE = 0.002


class TrainingStatus(str, Enum):
    """What a training run ended with. Each is an answer for the user, none is an error."""

    TRAINED = "trained"  # trained, and the gate promoted it: naming among named people uses it
    REFUSED = "refused"  # trained, and the gate found it worse (or no better) than raw space: not used
    NOT_ENOUGH_LABELS = "not_enough_labels"  # too few human labels to train or to judge a head: nothing trained


class NotEnoughLabels(Exception):
    """Too few labelled faces to learn or to judge: ``missing`` says what is lacking, one line each."""

    def __init__(self, message: str, missing: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing = list(missing) or [message]


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-3
    margin: float = 0.2
    seed: int = 0
    hidden: int = 256
    out_dim: int = 128  # only for architecture "mlp"; a residual head keeps the input's dimension
    mining: str = "batch_hard"  # or "semi_hard"
    device: str | None = None  # None: cuda when available, else cpu
    faces_per_person_in_batch: int = 4  # K of the P x K batches
    architecture: str = "residual"  # "mlp": the old 512->256->128 whole new space (kept for comparison)
    drift_weight: float = 1.0  # weight of mean(1 - cos(head(u), u)) over unlabelled faces u
    loss: str = "prototype"  # "triplet" (PK batches, mining) or "prototype" (softmax over named people's centroids)
    scale: float = 30.0  # prototype loss: cosine logit scale (NormFace / CosFace)
    cos_margin: float = 0.2  # prototype loss: additive cosine margin on the true person (CosFace)

    def __post_init__(self) -> None:
        if self.mining not in MINING_STRATEGIES:
            raise ValueError(f"mining must be one of {MINING_STRATEGIES}, not {self.mining!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, not {self.architecture!r}")
        if self.faces_per_person_in_batch < 2:
            raise ValueError("faces_per_person_in_batch must be >= 2: an anchor needs a positive in its batch")
        if self.batch_size < 2 * self.faces_per_person_in_batch:
            raise ValueError("batch_size must hold at least two people (2 x faces_per_person_in_batch)")
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {self.loss!r}")
        if self.drift_weight < 0:
            raise ValueError("drift_weight must be >= 0")

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> "TrainConfig":
        """Rebuild from a checkpoint's ``config`` (unknown keys from newer versions are ignored)."""
        known = TrainConfig.__dataclass_fields__.keys()
        return TrainConfig(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainResult:
    state_dict: dict  # name -> cpu tensor
    config: TrainConfig
    losses: list[float]  # mean training loss per epoch (triplet + drift_weight * drift)
    people: int
    faces: int  # human-labelled faces trained on
    seconds: float
    device: str
    triplets: int = 0  # triplets (anchor, positive, negative) that went through the loss, all epochs together
    augmented_faces: int = 0  # augmented copies of those faces trained on as extra positives
    unlabelled_faces: int = 0  # faces the drift penalty held in place

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
    """Raise ``NotEnoughLabels`` unless at least ``min_people`` people have ``min_faces`` faces each.

    A triplet needs two faces of one person and one of another, hence the hard minimum of 2 x 2 (augmented
    copies count as faces of their person for training, not for the gate). ``None`` ids are ignored.
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
        f">= {RECOMMENDED_PEOPLE} people.",
        [f"{min_people - len(usable)} more people with >= {min_faces} labelled faces each (have {have})"],
    )


# --------------------------------------------------------------------------------------------------------------
# Augmentation (of aligned 112x112 crops, re-embedded by the recogniser)
# --------------------------------------------------------------------------------------------------------------

#: What :func:`augment_crop` makes of one aligned crop, in order. Each imitates something real photos do to a
#: face the user labelled once: the other side of the face (flip), a looser or tighter detection (crop), a
#: small or out-of-focus face (blur: down to 28 px and back, which is what a 30-pixel face looks like to the
#: recogniser), and both. Fixed, not random: the same crop always gives the same copies.
AUGMENTATIONS: tuple[str, ...] = ("flip", "crop", "blur", "flip_blur")


def augment_crop(crop: np.ndarray) -> list[np.ndarray]:
    """The :data:`AUGMENTATIONS` of one aligned ``(112, 112, 3)`` uint8 crop, same shape and dtype."""
    import cv2

    crop = np.ascontiguousarray(crop)
    h, w = crop.shape[:2]
    flip = np.ascontiguousarray(crop[:, ::-1])
    m = int(round(0.08 * h))  # zoom in by 16 %: the face fills more of the frame, as with a tight detector box
    zoom = cv2.resize(crop[m : h - m, m : w - m], (w, h), interpolation=cv2.INTER_LINEAR)

    def blur(img: np.ndarray) -> np.ndarray:
        small = cv2.resize(img, (28, 28), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)

    return [flip, zoom, blur(crop), blur(flip)]


# --------------------------------------------------------------------------------------------------------------
# Model, loss, training
# --------------------------------------------------------------------------------------------------------------


def _build_head(in_dim: int, hidden: int, out_dim: int, architecture: str = "residual") -> "torch.nn.Module":
    """``residual``: ``x + fc2(relu(fc1(x)))`` with ``fc2`` zero at the start, so an untrained head is the
    identity and training moves only what the loss asks for. ``mlp``: the old ``fc2(relu(fc1(x)))``."""
    import torch
    import torch.nn as nn

    class ResidualHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(in_dim, hidden)
            self.fc2 = nn.Linear(hidden, in_dim)
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)
            # marks the state dict as residual, so a checkpoint needs no separate shape/kind metadata
            self.register_buffer("residual", torch.ones(()))

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return x + self.fc2(torch.relu(self.fc1(x)))

    if architecture == "residual":
        return ResidualHead()
    from collections import OrderedDict

    return nn.Sequential(OrderedDict(fc1=nn.Linear(in_dim, hidden), relu=nn.ReLU(), fc2=nn.Linear(hidden, out_dim)))


def _head_from_state(state_dict: Mapping[str, "torch.Tensor"]) -> "torch.nn.Module":
    """The head's kind and sizes are read off the weights."""
    try:
        hidden, in_dim = state_dict["fc1.weight"].shape
        out_dim = state_dict["fc2.weight"].shape[0]
    except KeyError as exc:
        raise ValueError(f"not a projection-head state dict (missing {exc}); keys: {sorted(state_dict)}") from None
    kind = "residual" if "residual" in state_dict else "mlp"
    head = _build_head(int(in_dim), int(hidden), int(out_dim), kind)
    head.load_state_dict(dict(state_dict))
    return head.eval()


def is_residual(state_dict: Mapping[str, Any]) -> bool:
    """True for heads that keep raw space's dimension and scale (usable among named people only)."""
    return "residual" in state_dict


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


def _prototype_loss(head, z, labels, batch_label_pos, X_labels, y_labels, n_people: int, config) -> tuple["torch.Tensor", int]:
    """CosFace over the named people: each face's scaled cosine to every person's centroid (the mean of their
    *human* labels, through the current head), with ``cos_margin`` taken off the true person's logit.

    A label is left out of its own person's centroid (``batch_label_pos``: its row in ``X_labels``, -1 for an
    augmented copy) when the person has other labels, so a face is pulled towards its *other* photos, not
    itself. Unlike a triplet hinge, which a label and its own copies already satisfy, this keeps pulling a face
    towards its person and away from the other named people until the margin holds. Returns (loss, faces).
    """
    import torch

    zl = torch.nn.functional.normalize(head(X_labels), dim=1)
    sums = torch.zeros((n_people, zl.shape[1]), device=z.device, dtype=z.dtype).index_add_(0, y_labels, zl)
    counts = torch.bincount(y_labels, minlength=n_people)
    C = torch.nn.functional.normalize(sums, dim=1)
    cos = z @ C.T
    loo = (batch_label_pos >= 0) & (counts[labels] > 1)
    if bool(loo.any()):
        own = sums[labels[loo]] - zl[batch_label_pos[loo]]
        own_cos = (z[loo] * torch.nn.functional.normalize(own, dim=1)).sum(1)
        cos = cos.clone()
        cos[loo.nonzero(as_tuple=True)[0], labels[loo]] = own_cos
    onehot = torch.nn.functional.one_hot(labels, n_people).to(z.dtype)
    logits = config.scale * (cos - config.cos_margin * onehot)
    return torch.nn.functional.cross_entropy(logits, labels), int(len(labels))


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
    *,
    augmented: np.ndarray | None = None,
    augmented_ids: Sequence[Hashable] | None = None,
    unlabelled: np.ndarray | None = None,
) -> TrainResult:
    """Train the head with a triplet loss on PK batches; ``progress(epoch, mean_loss)`` after each epoch.

    ``embeddings`` / ``person_ids`` are the human-labelled faces (``None`` ids are left out). ``augmented`` /
    ``augmented_ids`` are augmented copies of labelled faces (:func:`augment_crop`, re-embedded) and count as
    more faces of their person; ``unlabelled`` are faces nobody labelled, which the drift penalty
    (``config.drift_weight``) keeps where raw space put them. People with a single face and no copy are left
    out (a lone face can never be a positive pair). Same inputs and config give bit-identical weights on CPU.
    Raises ``NotEnoughLabels``.
    """
    import torch

    config = config or TrainConfig()
    X = np.asarray(embeddings, dtype=np.float32)
    if X.ndim != 2 or len(X) != len(person_ids):
        raise ValueError(f"embeddings must be (N, D) with N == len(person_ids); got {X.shape} and {len(person_ids)}")
    A = np.zeros((0, X.shape[1]), dtype=np.float32) if augmented is None else np.asarray(augmented, dtype=np.float32)
    a_ids = list(augmented_ids or [])
    if len(A) != len(a_ids):
        raise ValueError("augmented and augmented_ids must have the same length")
    labelled_people = set(_labelled_counts(person_ids))
    stray = {p for p in a_ids if p not in labelled_people}
    if stray:
        raise ValueError(f"augmented copies must be of labelled people; unknown ids: {sorted(map(repr, stray))[:5]}")
    all_ids = list(person_ids) + a_ids
    check_enough(all_ids)
    counts = _labelled_counts(all_ids)
    keep_people = sorted((p for p, n in counts.items() if n >= 2), key=repr)
    code_of = {p: i for i, p in enumerate(keep_people)}
    rows = np.array([i for i, p in enumerate(all_ids) if p in code_of], dtype=np.int64)
    codes = np.array([code_of[all_ids[i]] for i in rows], dtype=np.int64)
    XA = _unit(np.concatenate([X, A]) if len(A) else X)[rows]
    U = None if unlabelled is None or len(unlabelled) == 0 or config.drift_weight == 0 else _unit(unlabelled)
    if U is not None and config.architecture != "residual":
        raise ValueError("the drift penalty needs a residual head (an mlp head lives in another space)")

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
            head = _build_head(XA.shape[1], config.hidden, config.out_dim, config.architecture)
        head = head.to(device).train()
        optimiser = torch.optim.Adam(head.parameters(), lr=config.learning_rate)
        X_t = torch.from_numpy(XA).to(device)
        real = np.flatnonzero(rows < len(X))
        real_t = torch.from_numpy(real).to(device)  # the human labels: they define people
        label_pos = np.full(len(rows), -1, dtype=np.int64)
        label_pos[real] = np.arange(len(real))
        label_pos_t = torch.from_numpy(label_pos).to(device)
        n_people = len(keep_people)
        y_t = torch.from_numpy(codes).to(device)
        U_t = None if U is None else torch.from_numpy(U).to(device)
        for epoch in range(1, config.epochs + 1):
            total = torch.zeros((), device=device)
            for _ in range(n_batches):
                idx = torch.from_numpy(sampler.batch()).to(device)
                z = torch.nn.functional.normalize(head(X_t[idx]), dim=1)
                if config.loss == "triplet":
                    loss, n_triplets = _triplet_loss(z, y_t[idx], config.margin, config.mining)
                else:
                    loss, n_triplets = _prototype_loss(head, z, y_t[idx], label_pos_t[idx], X_t[real_t], y_t[real_t],
                                                       n_people, config)
                if U_t is not None:
                    u = U_t[torch.from_numpy(rng.choice(len(U), size=min(len(U), config.batch_size), replace=False)).to(device)]
                    moved = torch.nn.functional.normalize(head(u), dim=1)
                    loss = loss + config.drift_weight * (1.0 - (moved * u).sum(1)).mean()
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
    n_real = int((rows < len(X)).sum())
    return TrainResult(
        state_dict=state,
        config=config,
        losses=losses,
        people=len(keep_people),
        faces=n_real,
        seconds=seconds,
        device=device,
        triplets=triplets,
        augmented_faces=int(len(rows) - n_real),
        unlabelled_faces=0 if U is None else int(len(U)),
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
    prev_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # same reduction order every call: the same face always projects the same
        with torch.inference_mode():
            for lo in range(0, len(X), batch):
                z = head(torch.from_numpy(_unit(X[lo : lo + batch])))
                out[lo : lo + batch] = torch.nn.functional.normalize(z, dim=1).numpy()
    finally:
        torch.set_num_threads(prev_threads)
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
# Naming among named people: the one place the head is used for naming
# --------------------------------------------------------------------------------------------------------------


def centroid_scores(X: np.ndarray, label_X: np.ndarray, label_owner: Sequence[int], n_people: int) -> np.ndarray:
    """(N, P) cosine of each face to each named person's centroid (the normalised mean of their labels)."""
    X = _unit(X)
    L = _unit(label_X)
    owner = np.asarray(label_owner, dtype=np.int64)
    C = np.zeros((n_people, L.shape[1]), dtype=np.float32)
    np.add.at(C, owner, L)
    return X @ _unit(C).T


def name_faces(
    raw_scores: np.ndarray,
    head_scores: np.ndarray | None = None,
    *,
    raw_bar: float,
    raw_floor: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(person index per face, -1 = nobody; the score the decision rests on), raw rule or head rule.

    ``raw_scores`` / ``head_scores``: (N, P) similarities of N faces to P named people in raw space and in the
    head's space (:func:`centroid_scores`, or any per-person score on raw ArcFace's cosine scale).

    Raw rule (``head_scores`` None): the best person when their raw score reaches ``raw_bar``.

    Head rule - the contract the head is promoted under:
    * a person is a *candidate* for a face only when the face's raw score for them reaches ``raw_floor`` (the
      model's impostor floor); nobody else can be named, whatever the head says;
    * when raw space would name someone (best raw >= ``raw_bar``), the head picks among the candidates: its best
      candidate when its head score reaches ``raw_bar``, else raw's choice;
    * when raw space names nobody, the face is named only if exactly one person is a candidate and the head's
      score for that person reaches ``raw_bar`` (a face above the impostor floor for one named person only).
    """
    raw = np.asarray(raw_scores, dtype=np.float32)
    n, p = raw.shape if raw.ndim == 2 else (len(raw), 0)
    out = np.full(n, -1, dtype=np.int64)
    score = np.zeros(n, dtype=np.float32)
    if n == 0 or p == 0:
        return out, score
    if raw_floor > raw_bar:
        raise ValueError(f"raw_floor ({raw_floor}) must not be above raw_bar ({raw_bar})")
    best = raw.argmax(1)
    best_raw = raw[np.arange(n), best]
    raw_named = best_raw >= raw_bar
    if head_scores is None:
        out[raw_named] = best[raw_named]
        score[raw_named] = best_raw[raw_named]
        return out, score
    head = np.asarray(head_scores, dtype=np.float32)
    if head.shape != raw.shape:
        raise ValueError(f"head_scores {head.shape} must have the shape of raw_scores {raw.shape}")
    cand = raw >= raw_floor
    h = np.where(cand, head, -np.inf)
    q = h.argmax(1)
    hq = h[np.arange(n), q]
    head_ok = hq >= raw_bar
    rerank = raw_named & head_ok
    keep_raw = raw_named & ~head_ok
    lift = ~raw_named & (cand.sum(1) == 1) & head_ok
    out[rerank | lift] = q[rerank | lift]
    score[rerank | lift] = hq[rerank | lift]
    out[keep_raw] = best[keep_raw]
    score[keep_raw] = best_raw[keep_raw]
    return out, score


# --------------------------------------------------------------------------------------------------------------
# The gate
# --------------------------------------------------------------------------------------------------------------

#: measures compared by ``gate``: name -> (human name, rule). "strict": may not drop at all; "tolerant": may drop
#: by the gate's tolerance; "count_max": a count that may not rise.
GATE_MEASURES: dict[str, tuple[str, str]] = {
    "precision": ("naming precision (named people's held-out faces + strangers)", "strict"),
    "strangers_named": ("strangers named (held-out people's faces given a name)", "count_max"),
    "recall": ("naming recall (named people's held-out faces)", "tolerant"),
    "new_people_precision": ("naming precision of people labelled after training", "strict"),
    "new_people_recall": ("naming recall of people labelled after training", "tolerant"),
}
#: measures where a head must be strictly better somewhere to earn promotion (equal everywhere = no reason to use it)
GAIN_MEASURES = ("recall", "new_people_recall", "precision", "new_people_precision", "strangers_named")
#: quality score below which a face counts as low-quality in the reports (tiny, blurred or turned; see
#: models.quality_score: about an embedding norm of 19 at full detector confidence)
LOW_QUALITY = 0.5


@dataclass(frozen=True)
class GateMinimum:
    """The least labelled data the gate needs to judge a head; below it the answer is ``not_enough_labels``.

    Why these: the gate compares two naming rules on held-out labelled faces, so it needs (a) people who stay
    named and train the head, (b) labelled faces of those people the head never saw, on which recall and
    precision can move by more than one face, and (c) whole labelled people the head never saw, who play the
    strangers: without them "no more strangers named" cannot be checked, and that is the measure that matters
    most. A person with one label can train (with augmentations) but gives no held-out face.
    """

    named_people: int = 3
    test_faces: int = 10
    stranger_people: int = 2

    def missing(self, named_people: int, test_faces: int, stranger_people: int) -> list[str]:
        out = []
        if named_people < self.named_people:
            out.append(f"people who keep labels for training: {named_people} of >= {self.named_people}")
        if test_faces < self.test_faces:
            out.append(
                f"held-out labelled faces of those people: {test_faces} of >= {self.test_faces} "
                "(label a second or third face of more people)"
            )
        if stranger_people < self.stranger_people:
            out.append(f"labelled people held out as strangers: {stranger_people} of >= {self.stranger_people} (label more people)")
        return out


@dataclass
class GateReport:
    raw: dict
    projected: dict
    promoted: bool
    reasons: list[str] = field(default_factory=list)
    use_for_clustering: bool = False  # unknown people cluster as well in the head's space (else clustering stays raw)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def failing(self) -> list[str]:
        """The reason lines of the measures that stopped promotion (empty when promoted)."""
        return [r for r in self.reasons[1:] if "WORSE" in r or "not measured" in r or r.startswith("no gain")]


def split_for_gate(
    person_ids: Sequence[Hashable],
    groups: Sequence[Hashable] | None,
    seed: int,
    holdout_people_frac: float = 0.25,
    holdout_face_frac: float = 0.3,
    minimum: GateMinimum | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train_idx, holdout_known_idx, holdout_people_idx) into ``person_ids``.

    Whole people are held out (at least ``minimum.stranger_people`` when there are enough people): to the head
    and to the naming rules they are strangers, whose faces must stay unnamed. About ``holdout_face_frac`` of
    each remaining person's faces are held out as test faces, at least one for anyone with two or more and
    always leaving one to train on. ``groups`` (photo ids) keeps every face of a group on one side, so
    near-duplicate shots cannot leak between train and test.
    """
    minimum = minimum or GateMinimum()
    ids = list(person_ids)
    n = len(ids)
    grp: list = list(range(n)) if groups is None else list(groups)
    if len(grp) != n:
        raise ValueError("groups must be as long as person_ids")
    grp = [("face", i) if g is None else g for i, g in enumerate(grp)]  # no group id: a group of its own
    rng = np.random.default_rng(seed)
    counts = _labelled_counts(ids)
    people = sorted(counts, key=repr)

    n_out = int(round(holdout_people_frac * len(people))) if holdout_people_frac > 0 else 0
    if holdout_people_frac > 0:
        n_out = max(n_out, minimum.stranger_people)
    n_out = min(n_out, max(0, len(people) - minimum.named_people))
    held_people = {people[i] for i in rng.permutation(len(people))[:n_out]}
    held_people_idx = np.array([i for i, p in enumerate(ids) if p in held_people], dtype=np.int64)

    trained = [i for i, p in enumerate(ids) if p is not None and p not in held_people]
    target = {
        p: min(max(1, int(round(holdout_face_frac * counts[p]))), counts[p] - 1)
        for p in counts if p not in held_people and counts[p] >= 2
    }
    by_group: dict[Hashable, list[int]] = {}
    for i in trained:
        by_group.setdefault(grp[i], []).append(i)
    group_keys = list(by_group)
    taken: Counter = Counter()
    known_out: list[int] = []
    for gi in rng.permutation(len(group_keys)):
        members = by_group[group_keys[gi]]
        need = Counter(ids[i] for i in members)
        if all(taken[p] + c <= target.get(p, 0) for p, c in need.items()):
            taken.update(need)
            known_out.extend(members)
    known_set = set(known_out)
    train_idx = np.array([i for i in trained if i not in known_set], dtype=np.int64)
    return train_idx, np.array(sorted(known_set), dtype=np.int64), held_people_idx


def _as_labels(y: Sequence[Hashable]) -> list:
    return list(y.tolist() if isinstance(y, np.ndarray) else y)


def _cluster_labels(X: np.ndarray, threshold: float, groups: Sequence[Hashable] | None, seed: int) -> np.ndarray:
    from face_pipeline.core.cluster import cluster_faces

    kwargs: dict[str, Any] = {"threshold": float(threshold), "seed": seed}
    if groups is not None:
        kwargs["groups"] = np.asarray(list(groups), dtype=object)
    return np.asarray(cluster_faces(np.asarray(X, dtype=np.float32), **kwargs))


def _bcubed_of_clustering(y: Sequence[Hashable], labels: np.ndarray) -> dict[str, float]:
    prf = bcubed_prf(list(y), noise_as_singletons(labels.tolist()))
    return {"bcubed_precision": prf.precision, "bcubed_recall": prf.recall, "bcubed_f": prf.f1}


def naming_score(truth: Sequence[Hashable], named: Sequence[Hashable | None], known: set) -> dict:
    """Precision over every name given, recall over faces of ``known`` people, strangers named (count)."""
    assigned = sum(n is not None for n in named)
    correct = sum(n is not None and n == t for t, n in zip(truth, named))
    known_faces = sum(t in known for t in truth)
    known_correct = sum(n is not None and n == t and t in known for t, n in zip(truth, named))
    strangers = sum(t not in known for t in truth)
    strangers_named = sum(n is not None and t not in known for t, n in zip(truth, named))
    return {
        "assigned": assigned,
        "correct": correct,
        "precision": correct / assigned if assigned else 1.0,
        "recall": known_correct / known_faces if known_faces else None,
        "known_faces": known_faces,
        "strangers": strangers,
        "strangers_named": strangers_named,
        "stranger_rate": strangers_named / strangers if strangers else 0.0,
    }


def evaluate_naming(
    X_labels: np.ndarray,
    y_labels: Sequence[Hashable],
    X_queries: np.ndarray,
    y_queries: Sequence[Hashable],
    *,
    raw_bar: float,
    raw_floor: float,
    project_fn: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Name ``X_queries`` from the labelled gallery with the raw rule (``project_fn`` None) or the head rule.

    Queries whose truth is not among ``y_labels``' people are strangers. Returns :func:`naming_score`'s
    measures plus ``named`` (the person per query, None = nobody) for callers that slice further.
    """
    y_l = _as_labels(y_labels)
    y_q = _as_labels(y_queries)
    people = sorted(set(y_l), key=repr)
    if not people or len(y_q) == 0:
        return {**naming_score(y_q, [None] * len(y_q), set(people)), "named": [None] * len(y_q)}
    index = {p: i for i, p in enumerate(people)}
    owner = [index[p] for p in y_l]
    raw = centroid_scores(X_queries, X_labels, owner, len(people))
    head = None
    if project_fn is not None:
        head = centroid_scores(project_fn(X_queries), project_fn(X_labels), owner, len(people))
    who, _score = name_faces(raw, head, raw_bar=raw_bar, raw_floor=raw_floor)
    named = [people[j] if j >= 0 else None for j in who]
    return {**naming_score(y_q, named, set(people)), "named": named}


def evaluate_rules(
    X: np.ndarray,
    person_ids: Sequence[Hashable],
    train_idx: np.ndarray,
    known_idx: np.ndarray,
    unseen_idx: np.ndarray,
    project_fn: Callable[[np.ndarray], np.ndarray] | None,
    *,
    raw_bar: float,
    raw_floor: float,
    cluster_threshold: float,
    quality: np.ndarray | None = None,
    new_labels_per_person: int = 1,
    seed: int = 0,
) -> dict:
    """Score one naming rule (raw when ``project_fn`` is None, else the head's) on a gate split.

    * ``precision`` / ``recall`` / ``strangers_named``: the training faces are the labels; the named people's
      held-out faces and the held-out people's faces (strangers) are named by :func:`name_faces`;
    * ``new_people_precision`` / ``_recall``: each held-out person with two or more faces gets
      ``new_labels_per_person`` labels (seeded) and joins the gallery; their other faces are named - a person
      labelled *after* the head was trained;
    * ``low_quality_recall`` (reported, not gated): recall on held-out faces with quality < ``LOW_QUALITY``;
    * ``bcubed_f`` (reported; decides ``use_for_clustering``): the held-out people clustered at
      ``cluster_threshold`` in this rule's space.
    """
    X = _unit(np.asarray(X, dtype=np.float32))
    y = np.asarray(_as_labels(person_ids), dtype=object)
    queries = np.concatenate([known_idx, unseen_idx]).astype(np.int64)
    base = evaluate_naming(X[train_idx], y[train_idx], X[queries], y[queries], raw_bar=raw_bar, raw_floor=raw_floor,
                           project_fn=project_fn)
    named = base.pop("named")
    out: dict[str, Any] = dict(base)
    out["unseen_people"] = len(set(y[unseen_idx].tolist()))
    if quality is not None and len(known_idx):
        q = np.asarray(quality)[known_idx]
        low = np.flatnonzero(q < LOW_QUALITY)
        out["low_quality_faces"] = int(len(low))
        out["low_quality_recall"] = (
            sum(named[i] == y[known_idx[i]] for i in low) / len(low) if len(low) else None
        )

    rng = np.random.default_rng(seed)
    new_labels: list[int] = []
    for person in sorted(set(y[unseen_idx].tolist()), key=repr):
        rows = [int(i) for i in unseen_idx if y[i] == person]
        if len(rows) >= 2:
            new_labels.extend(int(r) for r in rng.choice(rows, size=min(new_labels_per_person, len(rows) - 1), replace=False))
    labelled_new = {y[i] for i in new_labels}
    new_queries = np.array([i for i in unseen_idx if y[i] in labelled_new and i not in set(new_labels)], dtype=np.int64)
    if len(new_queries):
        gallery = np.concatenate([train_idx, np.array(new_labels, dtype=np.int64)])
        new = evaluate_naming(X[gallery], y[gallery], X[new_queries], y[new_queries], raw_bar=raw_bar,
                              raw_floor=raw_floor, project_fn=project_fn)
        out.update(new_people_precision=new["precision"], new_people_recall=new["recall"], new_people_queries=int(len(new_queries)))
    else:
        out.update(new_people_precision=None, new_people_recall=None, new_people_queries=0)

    out["cluster_threshold"] = float(cluster_threshold)
    if len(unseen_idx):
        space = X[unseen_idx] if project_fn is None else project_fn(X[unseen_idx])
        out.update(_bcubed_of_clustering(y[unseen_idx].tolist(), _cluster_labels(space, cluster_threshold, None, seed)))
    else:
        out.update(bcubed_precision=None, bcubed_recall=None, bcubed_f=None)
    return out


def gate(raw_metrics: Mapping[str, Any], proj_metrics: Mapping[str, Any], tolerance: float = 0.0) -> GateReport:
    """Promote the head only if its naming rule is not worse than raw on any measure and better on one.

    Precision may not drop at all and strangers named may not rise (a wrong name on a face is the one error
    users notice and resent); recall may drop by at most ``tolerance``. A measure missing from either side
    blocks promotion: not measured is not the same as not worse. A head equal to raw everywhere is refused
    too: it would only add a model to run. Every measure gets a reason line, pass or fail, for the UI.
    Separately, ``use_for_clustering`` says whether unknown people cluster as well in the head's space
    (BCubed F within ``CLUSTER_TOLERANCE``); it does not affect promotion.
    """
    eps = 1e-12
    reasons: list[str] = []
    ok = True
    gained = False
    for key, (name, rule) in GATE_MEASURES.items():
        r, p = raw_metrics.get(key), proj_metrics.get(key)
        if r is None or p is None or (isinstance(r, float) and math.isnan(r)) or (isinstance(p, float) and math.isnan(p)):
            ok = False
            reasons.append(f"{name}: not measured (raw={r}, projected={p}), so the head cannot be shown not to hurt it")
            continue
        if rule == "count_max":
            worse, better = p > r, p < r
            reasons.append(f"{name}: raw {r} -> head {p} ({'WORSE' if worse else 'better' if better else 'equal'}; must not rise)")
        else:
            allowed = 0.0 if rule == "strict" else tolerance
            worse, better = p < r - allowed - eps, p > r + eps
            verdict = "WORSE" if worse else ("better" if better else "equal")
            text = "must not drop" if rule == "strict" else f"may drop by <= {tolerance:.3f}"
            reasons.append(f"{name}: raw {r:.4f} -> head {p:.4f} ({verdict}; {text})")
        ok &= not worse
        gained |= bool(better) and key in GAIN_MEASURES
    if ok and not gained:
        ok = False
        reasons.append("no gain: the head names exactly as well as raw space on every measure, so it is not used")
    rb, pb = raw_metrics.get("bcubed_f"), proj_metrics.get("bcubed_f")
    use_for_clustering = rb is not None and pb is not None and pb >= rb - CLUSTER_TOLERANCE - eps
    if rb is not None and pb is not None:
        reasons.append(
            f"clustering of unseen people (BCubed F): raw {rb:.4f} -> head space {pb:.4f}: unknown faces are clustered in "
            + ("the head's space" if use_for_clustering else f"raw space (head space more than {CLUSTER_TOLERANCE} lower)")
        )
    reasons.insert(0, "promoted: the head names among named people at least as well as raw space, and better somewhere"
                   if ok else "refused: the head is worse, unmeasured or no better than raw space")
    return GateReport(raw=dict(raw_metrics), projected=dict(proj_metrics), promoted=ok, reasons=reasons,
                      use_for_clustering=bool(use_for_clustering and ok))


def gate_split(
    person_ids: Sequence[Hashable],
    groups: Sequence[Hashable] | None,
    seed: int,
    minimum: GateMinimum | None = None,
    holdout_people_frac: float = 0.25,
    holdout_face_frac: float = 0.3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`split_for_gate`, then raise ``NotEnoughLabels`` (with each missing item) below ``minimum``."""
    minimum = minimum or GateMinimum()
    ids = list(person_ids)
    train_idx, known_idx, unseen_idx = split_for_gate(ids, groups, seed, holdout_people_frac, holdout_face_frac, minimum)
    named_people = len({ids[i] for i in train_idx})
    strangers = len({ids[i] for i in unseen_idx})
    missing = minimum.missing(named_people, len(known_idx), strangers)
    if missing:
        have = f"{len(ids)} labelled faces of {len(set(ids))} people"
        raise NotEnoughLabels(
            f"not enough labels to judge a head ({have}); missing: " + "; ".join(missing)
            + f". recommended: >= {RECOMMENDED_FACES} faces for each of >= {RECOMMENDED_PEOPLE} people.",
            missing,
        )
    return train_idx, known_idx, unseen_idx


def run_gate(
    embeddings: np.ndarray,
    person_ids: Sequence[Hashable],
    config: TrainConfig | None = None,
    *,
    groups: Sequence[Hashable] | None = None,
    quality: np.ndarray | None = None,
    augmented: np.ndarray | None = None,
    augmented_source: Sequence[int] | None = None,
    unlabelled: np.ndarray | None = None,
    raw_bar: float = 0.40,
    raw_floor: float = 0.30,
    cluster_threshold: float = 0.40,
    tolerance: float = 0.0,
    minimum: GateMinimum | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[GateReport, TrainResult]:
    """The whole check in one call: split, train a candidate head, score both naming rules, gate.

    ``embeddings`` / ``person_ids``: human-labelled faces only. ``augmented`` rows are copies of the labelled
    face ``augmented_source[i]`` (an index into ``embeddings``); only copies of training faces are used, so
    nothing of a held-out face reaches the head. ``unlabelled``: faces nobody labelled, for the drift penalty.
    Raises ``NotEnoughLabels`` below ``minimum`` (:class:`GateMinimum`). The candidate returned is exactly the
    head that was measured: ship it, or the gate's numbers no longer describe what runs.
    """
    config = config or TrainConfig()
    ids = list(person_ids)
    X = _unit(np.asarray(embeddings, dtype=np.float32))
    train_idx, known_idx, unseen_idx = gate_split(ids, groups, config.seed, minimum)
    aug_X, aug_ids = None, None
    if augmented is not None and len(augmented):
        src = np.asarray(augmented_source, dtype=np.int64)
        if len(src) != len(augmented):
            raise ValueError("augmented_source must give the source face of every augmented row")
        keep = np.isin(src, train_idx)
        aug_X = np.asarray(augmented, dtype=np.float32)[keep]
        aug_ids = [ids[i] for i in src[keep]]
    candidate = train_projection_head(X[train_idx], [ids[i] for i in train_idx], config, progress,
                                      augmented=aug_X, augmented_ids=aug_ids, unlabelled=unlabelled)
    state = candidate.state_dict

    def measure(project_fn) -> dict:
        m = evaluate_rules(X, ids, train_idx, known_idx, unseen_idx, project_fn, raw_bar=raw_bar, raw_floor=raw_floor,
                           cluster_threshold=cluster_threshold, quality=quality, seed=config.seed)
        m.update(raw_bar=float(raw_bar), raw_floor=float(raw_floor), fit_faces=int(len(train_idx)),
                 fit_people=int(candidate.people), augmented_faces=int(candidate.augmented_faces))
        return m

    raw = measure(None)
    head = measure(lambda V: project(state, V))
    return gate(raw, head, tolerance), candidate


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
    ax.set_ylabel("loss (triplet + drift)")
    ax.set_title("projection head training")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
