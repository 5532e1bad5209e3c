"""Projection heads in the product: train on the library's human labels, gate, version, use among named people.

The flow (each step a function, so the Dagster assets and ``face-pipeline train`` share it):

1. :func:`train_and_gate` takes every human-labelled face (manual labels, cluster labels, confirmed
   suggestions - never a face automation named), flipped / zoomed / blurred copies of their aligned crops
   re-embedded by the recogniser, and the unlabelled faces (which the head must leave where they are). It holds
   out some labelled faces and whole labelled people, trains a residual head on the rest and lets the gate
   (:func:`train.run_gate`) compare the raw naming rule with the head's rule. It returns a typed
   :class:`TrainingOutcome`: ``trained`` (promoted), ``refused`` (with the failing measures) or
   ``not_enough_labels`` (with what is missing; nothing is saved). A trained head is saved as
   ``face_projection_{model}_v{N}.pt`` + JSON sidecar whatever the verdict.
2. :class:`NamedPersonHead` (from :func:`live_named_head`) is the hook naming calls to decide *among named
   people*: raw space still decides whether a face is anyone named at all (see its contract).
3. :func:`reembed_faces` pushes every face through the newest promoted head into ``faces_proj_v{N}``, built
   beside the live collection; the alias ``faces_proj`` then switches in one atomic call. :func:`live_projector`
   serves ``--use-trained-model``. Clustering of unknown faces stays in raw space unless the gate found the
   head's space no worse for people it never saw (``use_for_clustering``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from sqlalchemy import func, select

from face_pipeline.core import train as train_mod
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import HUMAN_SOURCES, PERSON_MERGED, FaceAssignmentEvent, FaceInstance, Person, ProjectionHead
from face_pipeline.core.embedding_files import load_embeddings
from face_pipeline.core import face_state
from face_pipeline.core.ingest import batch_dir
from face_pipeline.core.organize import human_label_changes_since
from face_pipeline.core.train import TrainingStatus
from face_pipeline.core.vectors import CollectionNames, FaceRecord, FaceVectorStore
from face_pipeline.settings import Settings

log = logging.getLogger(__name__)
# The default library's projected alias (FACE_LIBRARY unset); code derives names from the settings through
# vectors.CollectionNames (issue 11).
PROJ_ALIAS = CollectionNames().projected_alias
#: at most this many unlabelled faces (seeded sample) hold the head in place; more adds time, not information
MAX_UNLABELLED = 20_000


class NoPromotedHead(RuntimeError):
    """Asked for the trained space, but no head has passed the gate yet."""


@dataclass
class TrainingOutcome:
    """What ``train`` ended with - an answer for the user in every case, never an error.

    ``status``: :class:`train.TrainingStatus`. ``trained``: a head was trained and promoted. ``refused``: a head
    was trained and saved but the gate found it worse or no better (``failing`` says which measures).
    ``not_enough_labels``: nothing was trained or saved (``missing`` says what to label). ``used_for`` says in
    plain words what uses the trained space now.
    """

    status: TrainingStatus
    reasons: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)
    version: int | None = None
    checkpoint: str | None = None
    sidecar: str | None = None
    people: int = 0
    faces: int = 0
    augmented_faces: int = 0
    unlabelled_faces: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    triplets_per_second: float = float("nan")
    raw_metrics: dict = field(default_factory=dict)
    projected_metrics: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)
    last_event_id: int = 0
    device: str = "cpu"
    use_for_clustering: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return self.status is TrainingStatus.TRAINED

    @property
    def used_for(self) -> str:
        if self.status is not TrainingStatus.TRAINED:
            return "nothing: naming and clustering stay in raw 512-d space"
        where = "the head's space" if self.use_for_clustering else "raw space"
        return f"deciding among named people (when --use-trained-model / the naming hook asks); unknown faces are clustered in {where}"

    def as_metadata(self) -> dict:
        """Plain JSON-able summary, for check-result metadata and the CLI."""
        return {"status": self.status.value, "version": self.version, "used_for": self.used_for,
                "reasons": list(self.reasons), "missing": list(self.missing), "failing": list(self.failing),
                "use_for_clustering": self.use_for_clustering}


def train_config(settings: Settings, **overrides) -> train_mod.TrainConfig:
    base = dict(epochs=settings.training_epochs, batch_size=settings.training_batch_size,
                learning_rate=settings.training_learning_rate, margin=settings.triplet_margin, seed=settings.training_seed,
                drift_weight=settings.training_drift_weight)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return train_mod.TrainConfig(**base)


def gate_minimum(settings: Settings) -> train_mod.GateMinimum:
    return train_mod.GateMinimum(named_people=settings.training_gate_min_named_people,
                                 test_faces=settings.training_gate_min_test_faces,
                                 stranger_people=settings.training_gate_min_stranger_people,
                                 strangers_at_risk=settings.training_gate_min_strangers_at_risk)


def labelled_faces(settings: Settings) -> tuple[list[str], np.ndarray, list[str], list[str]]:
    """(face ids, raw vectors, person ids, image ids) of every face a *human* labelled, for active persons.

    Only ``HUMAN_SOURCES`` (manual and cluster labels; a confirmed suggestion is recorded as a human label):
    faces automation named are the head's own kind of output and never train it.
    """
    with session_scope(settings.sql_url) as s:
        rows = s.execute(
            select(FaceInstance.face_id, FaceInstance.person_id, FaceInstance.image_id)
            .join(Person, Person.person_id == FaceInstance.person_id)
            .where(FaceInstance.assignment_source.in_(HUMAN_SOURCES), Person.status != PERSON_MERGED)
        ).all()
    meta = {fid: (pid, img) for fid, pid, img in rows}
    ids, X = load_embeddings(settings, meta)
    return ids, X, [meta[f][0] for f in ids], [meta[f][1] for f in ids]


def _face_quality(settings: Settings, face_ids: Sequence[str]) -> np.ndarray:
    wanted = set(face_ids)
    with session_scope(settings.sql_url) as s:
        q = {fid: qs for fid, qs in s.execute(select(FaceInstance.face_id, FaceInstance.quality_score)) if fid in wanted}
    return np.array([np.nan if q.get(f) is None else float(q[f]) for f in face_ids], dtype=np.float32)


def augmented_labels(settings: Settings, face_ids: Sequence[str], models=None) -> tuple[np.ndarray, np.ndarray, str]:
    """(augmented vectors, source index into ``face_ids`` per vector, note) for the labelled faces.

    The aligned 112x112 crops ingest kept per batch (``crops.npy`` + ``crops.json``) are augmented
    (:func:`train.augment_crop`) and embedded by the product's recogniser (``models``, a ``FaceModels``; loaded
    from the settings when None). A face without a stored crop, or a library without models, simply gets no
    copies, and ``note`` says so: augmentation helps, it is not required.
    """
    empty = np.zeros((0, 512), dtype=np.float32), np.zeros(0, dtype=np.int64)
    if not face_ids:
        return (*empty, "no labelled faces")
    pos = {f: i for i, f in enumerate(face_ids)}
    with session_scope(settings.sql_url) as s:
        batch_of = {fid: b for fid, b in s.execute(select(FaceInstance.face_id, FaceInstance.batch)) if fid in pos}
    crops: list[np.ndarray] = []
    source: list[int] = []
    for batch in sorted(set(batch_of.values())):
        folder = batch_dir(settings, batch)
        if not (folder / "crops.npy").exists() or not (folder / "crops.json").exists():
            continue
        ids = json.loads((folder / "crops.json").read_text())
        arr = np.load(folder / "crops.npy", mmap_mode="r")
        for row, fid in enumerate(ids):
            if fid in pos and batch_of.get(fid) == batch and row < len(arr):
                crops.append(np.asarray(arr[row]))
                source.append(pos[fid])
    if not crops:
        return (*empty, "no stored crops for the labelled faces: trained without augmentation")
    if models is None:
        from face_pipeline.core.models import FaceModels, ModelNotFoundError

        try:
            models = FaceModels(settings)
        except ModelNotFoundError as exc:
            return (*empty, f"no recogniser to embed augmented crops ({exc}): trained without augmentation")
    from face_pipeline.core.models import l2_normalize

    copies: list[np.ndarray] = []
    src: list[int] = []
    for crop, i in zip(crops, source):
        made = train_mod.augment_crop(crop)
        copies.extend(made)
        src.extend([i] * len(made))
    A = l2_normalize(models.embed(copies)).astype(np.float32)
    note = f"{len(crops)} of {len(face_ids)} labelled faces augmented ({', '.join(train_mod.AUGMENTATIONS)})"
    return A, np.asarray(src, dtype=np.int64), note


def unlabelled_faces(settings: Settings, labelled: Sequence[str], seed: int) -> np.ndarray:
    """Raw vectors of faces nobody labelled (a seeded sample of at most ``MAX_UNLABELLED``), for the drift penalty."""
    ids, X = load_embeddings(settings)
    taken = set(labelled)
    keep = np.array([i for i, f in enumerate(ids) if f not in taken], dtype=np.int64)
    if len(keep) > MAX_UNLABELLED:
        keep = np.sort(np.random.default_rng(seed).choice(keep, size=MAX_UNLABELLED, replace=False))
    return X[keep] if len(keep) else np.zeros((0, X.shape[1] if X.ndim == 2 else 512), dtype=np.float32)


def newest_event_id(settings: Settings) -> int:
    with session_scope(settings.sql_url) as s:
        return int(s.scalar(select(func.max(FaceAssignmentEvent.id))) or 0)


def labels_changed_since_training(settings: Settings) -> bool:
    """True when human label events exist after the label state the newest head was trained on."""
    with session_scope(settings.sql_url) as s:
        last = int(s.scalar(select(func.max(ProjectionHead.last_event_id))) or 0)
    changes, _newest = human_label_changes_since(settings, last)
    return changes > 0


def train_and_gate(
    settings: Settings,
    *,
    config: train_mod.TrainConfig | None = None,
    progress: Callable[[int, float], None] | None = None,
    model_name: str | None = None,
    models=None,
) -> TrainingOutcome:
    """Train a head on the library's human labels, gate it against raw space, save it as the next version.

    Always returns a :class:`TrainingOutcome`; too little data is the ``not_enough_labels`` outcome (nothing
    saved), not an exception. ``models`` (a ``FaceModels``) embeds the augmented crops; loaded when None.
    """
    t0 = time.perf_counter()
    config = config or train_config(settings)
    model_name = model_name or settings.model_name
    face_ids, X, y, groups = labelled_faces(settings)
    # Person ids are random (uuid4), and the gate's split and batches are ordered by label: the same labels would
    # give a different head in every library. Name each person by their first labelled face id instead
    # (content-derived; face_ids are sorted), so training is reproducible.
    first_face: dict[str, str] = {}
    for fid, pid in zip(face_ids, y):
        first_face.setdefault(pid, fid)
    y = [first_face[pid] for pid in y]
    minimum = gate_minimum(settings)
    try:
        train_mod.check_enough(y, min_people=settings.training_min_people, min_faces=settings.training_min_faces_per_person)
        train_mod.gate_split(y, groups, config.seed, minimum, X=X, raw_floor=settings.training_raw_floor)
    except train_mod.NotEnoughLabels as exc:
        return TrainingOutcome(status=TrainingStatus.NOT_ENOUGH_LABELS, reasons=[str(exc)], missing=exc.missing,
                               people=len(set(y)), faces=len(y), seconds=time.perf_counter() - t0)
    event_id = newest_event_id(settings)
    A, A_src, aug_note = augmented_labels(settings, face_ids, models)
    # an old-style whole-space head lives in another space: nothing to hold in place
    U = unlabelled_faces(settings, face_ids, config.seed) if config.architecture == "residual" else None
    verdict, result = train_mod.run_gate(
        X, y, config, groups=groups, quality=_face_quality(settings, face_ids), augmented=A, augmented_source=A_src,
        unlabelled=U, raw_bar=settings.person_match_threshold, raw_floor=settings.training_raw_floor,
        cluster_threshold=settings.unknown_threshold, minimum=minimum, progress=progress,
    )
    metrics = {"raw": verdict.raw, "projected": verdict.projected}
    # a residual head keeps raw space's cosine scale: the raw thresholds hold in it (the gate measured it so)
    thresholds = {name: {"assign": float(settings.person_match_threshold), "cluster": float(settings.unknown_threshold),
                         "floor": float(settings.training_raw_floor)} for name in metrics}
    folder = settings.artifacts_dir / "heads"
    with session_scope(settings.sql_url) as s:  # versions are unique across models and survive a cleared folder
        sql_next = int(s.scalar(select(func.max(ProjectionHead.version))) or 0) + 1
    version = max(train_mod.next_version(folder, model_name), sql_next)
    status = TrainingStatus.TRAINED if verdict.promoted else TrainingStatus.REFUSED
    pt, sidecar = train_mod.save_checkpoint(
        result, folder, model_name, version,
        {"validation": {"raw": metrics["raw"], "projected": metrics["projected"]}, "thresholds": thresholds,
         "promoted": verdict.promoted, "gate_reasons": verdict.reasons, "last_event_id": event_id,
         "status": status.value, "use_for_clustering": verdict.use_for_clustering, "augmentation": aug_note,
         "augmented_faces": result.augmented_faces, "unlabelled_faces": result.unlabelled_faces},
    )
    with session_scope(settings.sql_url) as s:
        s.add(ProjectionHead(version=version, embedding_model=model_name, path=str(pt), promoted=verdict.promoted, live=False,
                             metrics={"raw": metrics["raw"], "projected": metrics["projected"], "thresholds": thresholds,
                                      "reasons": verdict.reasons, "status": status.value,
                                      "use_for_clustering": verdict.use_for_clustering}, last_event_id=event_id))
    return TrainingOutcome(
        status=status, reasons=verdict.reasons, failing=verdict.failing, version=version, checkpoint=str(pt),
        sidecar=str(sidecar), people=result.people, faces=result.faces, augmented_faces=result.augmented_faces,
        unlabelled_faces=result.unlabelled_faces, losses=list(result.losses), seconds=time.perf_counter() - t0,
        triplets_per_second=float(result.triplets_per_second), raw_metrics=metrics["raw"],
        projected_metrics=metrics["projected"], thresholds=thresholds, last_event_id=event_id, device=result.device,
        use_for_clustering=verdict.use_for_clustering, extra={"augmentation": aug_note},
    )


# ----------------------------------------------------------------------------------- the naming hook ----
@dataclass(frozen=True)
class NamedPersonHead:
    """The promoted head, as naming uses it: to decide *among named people*, never whether a face is anyone.

    Contract (what organize may rely on, and must keep):

    * :meth:`named_person_scores` gives, for N faces and P named people, the cosine of each face to each
      person's centroid in the head's space (the centroid of the person's *human* labels, projected). It is on
      raw ArcFace's scale (the head is a residual map held near the identity), so ``raw_bar`` means the same.
    * :meth:`name` takes the caller's own raw (N, P) scores for the same people (any raw per-person score:
      centroid, exemplar, hybrid) and these head scores, and returns (person index or -1, score) by
      :func:`train.name_faces`: a person whose *raw* score is below ``raw_floor`` (the impostor floor) is never
      chosen; the head may re-rank people that clear the floor when raw space would name someone, and may name
      a face that clears the floor for exactly one named person when the head's score reaches ``raw_bar``.
    * Inputs may be unnormalised; they are L2-normalised first. Deterministic: same inputs, same outputs.
    """

    version: int
    state: dict
    raw_bar: float
    raw_floor: float
    use_for_clustering: bool = False

    def project(self, X: np.ndarray) -> np.ndarray:
        return train_mod.project(self.state, X)

    def named_person_scores(self, X: np.ndarray, label_X: np.ndarray, label_owner: Sequence[int], n_people: int) -> np.ndarray:
        """(N, P) head-space cosine of faces ``X`` to each named person's projected label centroid.
        ``label_owner[i]`` is the person index (0..P-1) of human label ``label_X[i]``."""
        return train_mod.centroid_scores(self.project(X), self.project(label_X), label_owner, n_people)

    def name(self, raw_scores: np.ndarray, head_scores: np.ndarray, raw_bar: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``raw_bar`` may only raise the head's own bar (a run's stricter person threshold)."""
        bar = self.raw_bar if raw_bar is None else max(self.raw_bar, raw_bar)
        return train_mod.name_faces(raw_scores, head_scores, raw_bar=bar, raw_floor=self.raw_floor)


def live_named_head(settings: Settings) -> NamedPersonHead | None:
    """The newest promoted head as a :class:`NamedPersonHead`, or None (then naming stays raw: nothing to do)."""
    head = live_head(settings) or newest_promoted(settings)
    if head is None:
        return None
    state, meta = train_mod.load_checkpoint(head.path)
    if not train_mod.is_residual(state):
        return None  # an old whole-space head: not safe to mix with raw scores
    thr = (head.metrics or {}).get("thresholds", {}).get("projected", {})
    return NamedPersonHead(version=head.version, state=state, raw_bar=float(thr.get("assign", settings.person_match_threshold)),
                           raw_floor=float(thr.get("floor", settings.training_raw_floor)),
                           use_for_clustering=bool((head.metrics or {}).get("use_for_clustering", False)))


def named_person_scores(head: NamedPersonHead, X: np.ndarray, label_X: np.ndarray, label_owner: Sequence[int],
                        n_people: int) -> np.ndarray:
    """Module-level form of :meth:`NamedPersonHead.named_person_scores`."""
    return head.named_person_scores(X, label_X, label_owner, n_people)


def newest_promoted(settings: Settings) -> ProjectionHead | None:
    with session_scope(settings.sql_url) as s:
        return s.scalars(select(ProjectionHead).where(ProjectionHead.promoted.is_(True)).order_by(ProjectionHead.version.desc())).first()


def live_head(settings: Settings) -> ProjectionHead | None:
    with session_scope(settings.sql_url) as s:
        return s.scalars(select(ProjectionHead).where(ProjectionHead.live.is_(True)).order_by(ProjectionHead.version.desc())).first()


@dataclass
class ReembedReport:
    version: int | None
    collection: str | None
    faces: int = 0
    previous: str | None = None
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str | None = None


def reembed_faces(settings: Settings, store: FaceVectorStore) -> ReembedReport:
    """Project every face with the newest promoted head into ``faces_proj_v{N}``; switch the alias atomically.

    ``store`` is any store on the same client (its alias is not used). The live collection keeps serving until
    the new one is complete; the switch is one alias operation; superseded versions are deleted after it.
    """
    t0 = time.perf_counter()
    head = newest_promoted(settings)
    if head is None:
        return ReembedReport(None, None, skipped="no promoted projection head yet: train one first")
    state, _meta = train_mod.load_checkpoint(head.path)
    ids, X = load_embeddings(settings)
    with session_scope(settings.sql_url) as s:
        wanted = set(ids)  # one scan instead of an IN list: SQLite caps bound variables
        rows = {f.face_id: f for f in s.scalars(select(FaceInstance)) if f.face_id in wanted}
        payloads = {fid: face_state.payload_of(rows[fid]) for fid in ids if fid in rows}
    keep = [i for i, f in enumerate(ids) if f in payloads]
    out_dim = int(state["fc2.weight"].shape[0])
    Z = train_mod.project(state, X[keep]) if keep else np.zeros((0, out_dim), dtype=np.float32)
    names = CollectionNames.of(settings)  # issue 11: every name from the library prefix
    proj = FaceVectorStore(store.client, names.projected_alias, dim=out_dim, quantization=store.quantization)
    name = names.projected_version(head.version)
    records = [FaceRecord(ids[i], Z[j], payloads[ids[i]]) for j, i in enumerate(keep)]
    if proj._alias_target(names.projected_alias) == name:
        # This head is already live (a re-run after new photos, or after a retrain the gate refused). Rebuilding
        # would delete the collection searches are using, and with it the alias. Same head, same vectors: upsert
        # in place (new faces appear, the others are rewritten identically) and drop faces that no longer exist.
        proj.upsert(records, collection=name)
        current = {r.face_id for r in records}
        proj.delete([r.face_id for r in proj.iter_records(with_vectors=False, collection=name) if r.face_id not in current])
        previous = name
    else:
        proj.create_collection(name, proj.dim)
        proj.upsert(records, collection=name)
        previous = proj.switch_alias(name)
    # Only this library's superseded versions: another library's collections on a shared server are not ours.
    removed = [c for c in proj.collection_names() if names.is_projected_version(c) and c != name]
    for c in removed:
        store.client.delete_collection(c)
    with session_scope(settings.sql_url) as s:
        for h in s.scalars(select(ProjectionHead)):
            h.live = h.version == head.version
    return ReembedReport(head.version, name, faces=len(keep), previous=previous, removed=removed, seconds=time.perf_counter() - t0)


def live_projector(settings: Settings) -> tuple[Callable[[np.ndarray], np.ndarray], str, dict]:
    """(project function, space name, thresholds) of the live head — for ``--use-trained-model``."""
    head = live_head(settings) or newest_promoted(settings)
    if head is None:
        raise NoPromotedHead("no promoted projection head: run `face-pipeline train` (and the gate must pass) first")
    state, _ = train_mod.load_checkpoint(head.path)
    thresholds = (head.metrics or {}).get("thresholds", {}).get("projected", {})
    return (lambda X: train_mod.project(state, X)), f"proj_v{head.version}", thresholds
