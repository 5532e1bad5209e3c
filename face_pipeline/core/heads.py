"""Projection heads in the product: train on the library's labels, gate, version, re-embed, switch.

The flow (each step a function, so the Dagster assets and ``face-pipeline train`` share it):

1. :func:`train_and_gate` takes every human-labelled face, holds out some faces of trained people and some
   whole people, trains a head on the rest, and scores raw vs projected space on the held-out faces
   (:func:`train.evaluate_space`) with thresholds calibrated separately per space. The head is saved as
   ``face_projection_{model}_v{N}.pt`` + JSON sidecar whatever the verdict; it is *promoted* only when the gate
   says it is not worse.
2. :func:`reembed_faces` pushes every face through the newest promoted head into ``faces_proj_v{N}`` (128-d,
   same payload), built beside the live collection; the alias ``faces_proj`` then switches in one atomic call
   and older versions are dropped.
3. :func:`live_projector` gives assignment and clustering the promoted space and its own thresholds when the
   user asks for it (``--use-trained-model``); raw space stays the default.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from sqlalchemy import func, select

from face_pipeline.core import train as train_mod
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import HUMAN_SOURCES, PERSON_MERGED, FaceAssignmentEvent, FaceInstance, Person, ProjectionHead
from face_pipeline.core.embedding_files import load_embeddings
from face_pipeline.core import face_state
from face_pipeline.core.organize import human_label_changes_since
from face_pipeline.core.vectors import CollectionNames, FaceRecord, FaceVectorStore
from face_pipeline.settings import Settings

log = logging.getLogger(__name__)
# The default library's projected alias (FACE_LIBRARY unset); code derives names from the settings through
# vectors.CollectionNames (issue 11).
PROJ_ALIAS = CollectionNames().projected_alias


class NoPromotedHead(RuntimeError):
    """Asked for the trained space, but no head has passed the gate yet."""


@dataclass
class TrainingOutcome:
    version: int
    promoted: bool
    reasons: list[str]
    checkpoint: str
    sidecar: str
    people: int
    faces: int
    losses: list[float]
    seconds: float
    triplets_per_second: float
    raw_metrics: dict
    projected_metrics: dict
    thresholds: dict
    last_event_id: int
    device: str = "cpu"
    extra: dict = field(default_factory=dict)


def train_config(settings: Settings, **overrides) -> train_mod.TrainConfig:
    base = dict(epochs=settings.training_epochs, batch_size=settings.training_batch_size,
                learning_rate=settings.training_learning_rate, margin=settings.triplet_margin, seed=settings.training_seed)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return train_mod.TrainConfig(**base)


def labelled_faces(settings: Settings) -> tuple[list[str], np.ndarray, list[str], list[str]]:
    """(face ids, raw vectors, person ids, image ids) of every face a human labelled, for active persons."""
    with session_scope(settings.sql_url) as s:
        rows = s.execute(
            select(FaceInstance.face_id, FaceInstance.person_id, FaceInstance.image_id)
            .join(Person, Person.person_id == FaceInstance.person_id)
            .where(FaceInstance.assignment_source.in_(HUMAN_SOURCES), Person.status != PERSON_MERGED)
        ).all()
    meta = {fid: (pid, img) for fid, pid, img in rows}
    ids, X = load_embeddings(settings, meta)
    return ids, X, [meta[f][0] for f in ids], [meta[f][1] for f in ids]


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
) -> TrainingOutcome:
    """Train a head on the library's labels, gate it against raw space, save it as the next version.

    Raises :class:`train.NotEnoughLabels` (clear message, recommended minimum included) when there is too
    little to learn from.
    """
    t0 = time.perf_counter()
    config = config or train_config(settings)
    model_name = model_name or settings.model_name
    face_ids, X, y, groups = labelled_faces(settings)
    # Person ids are random (uuid4), and the gate's split, the PK batches and the calibration folds are all
    # ordered by label: the same labels would give a different head in every library. Name each person by their
    # first labelled face id instead (content-derived; face_ids are sorted), so training is reproducible.
    first_face: dict[str, str] = {}
    for fid, pid in zip(face_ids, y):
        first_face.setdefault(pid, fid)
    y = [first_face[pid] for pid in y]
    train_mod.check_enough(y, min_people=settings.training_min_people, min_faces=settings.training_min_faces_per_person)
    event_id = newest_event_id(settings)
    # Raw space is measured at the thresholds production actually uses; the head gets its own, calibrated on
    # labelled faces (and strangers) it was not fitted on.
    verdict, result = train_mod.run_gate(
        X, y, config, groups=groups, raw_threshold=settings.person_match_threshold,
        raw_cluster_threshold=settings.unknown_threshold, progress=progress,
    )
    metrics = {"raw": verdict.raw, "projected": verdict.projected}
    thresholds = {
        name: {"assign": float(m["threshold"]), "cluster": float(m["cluster_threshold"])} for name, m in metrics.items()
    }
    folder = settings.artifacts_dir / "heads"
    with session_scope(settings.sql_url) as s:  # versions are unique across models and survive a cleared folder
        sql_next = int(s.scalar(select(func.max(ProjectionHead.version))) or 0) + 1
    version = max(train_mod.next_version(folder, model_name), sql_next)
    pt, sidecar = train_mod.save_checkpoint(
        result, folder, model_name, version,
        {"validation": {"raw": metrics["raw"], "projected": metrics["projected"]}, "thresholds": thresholds,
         "promoted": verdict.promoted, "gate_reasons": verdict.reasons, "last_event_id": event_id,
         },
    )
    with session_scope(settings.sql_url) as s:
        s.add(ProjectionHead(version=version, embedding_model=model_name, path=str(pt), promoted=verdict.promoted, live=False,
                             metrics={"raw": metrics["raw"], "projected": metrics["projected"], "thresholds": thresholds,
                                      "reasons": verdict.reasons}, last_event_id=event_id))
    return TrainingOutcome(
        version=version, promoted=verdict.promoted, reasons=verdict.reasons, checkpoint=str(pt), sidecar=str(sidecar),
        people=result.people, faces=result.faces, losses=list(result.losses), seconds=time.perf_counter() - t0,
        triplets_per_second=float(result.triplets_per_second), raw_metrics=metrics["raw"], projected_metrics=metrics["projected"],
        thresholds=thresholds, last_event_id=event_id, device=result.device,
    )


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
    Z = train_mod.project(state, X[keep]) if keep else np.zeros((0, 128), dtype=np.float32)
    names = CollectionNames.of(settings)  # issue 11: every name from the library prefix
    proj = FaceVectorStore(store.client, names.projected_alias, dim=int(Z.shape[1]) if len(Z) else 128, quantization=store.quantization)
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
