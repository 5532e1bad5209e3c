"""``face-pipeline evaluate``: measure the whole pipeline on a folder of labelled photos, beside baselines.

Protocol (the one the quality floors are asserted on): ingest ``LABELLED_DIR`` (one sub-folder per identity)
into a temporary home; for every ``known_every``-th person (sorted by name) a user labels ``k_labels`` photos;
the pipeline then assigns and clusters everything else. Each photo's *labelled* face is its most central,
largest face; any other face in it is a background stranger (an unknown person of its own).

Baselines are the anchors of :mod:`face_pipeline.evaluation.anchors`, on the same embeddings and the same labels,
applied the way their users would: a cluster whose labelled faces are all one person takes that name (a mixed
cluster is not named), like naming a cluster in Immich or PhotoPrism. The multi-seed protocol on cached
embeddings (label budgets, named fractions, the centroid frontier) is ``bench/quality.py``
(:mod:`face_pipeline.evaluation.protocol`); this command is the same comparison end to end through SQL.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy import select

from face_pipeline.core import face_state, ingest, labels, organize
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import FaceInstance, Person, Photo
from face_pipeline.core.embedding_files import load_embeddings
from face_pipeline.evaluation.anchors import ANCHORS
from face_pipeline.evaluation.metrics import assignment_score, bcubed_prf, pairwise_prf, purity
from face_pipeline.core.models import FaceModels
from face_pipeline.home import prepare_home
from face_pipeline.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class MethodScores:
    """One row of the evaluation table."""

    name: str
    assign_precision: float
    assign_recall: float
    unknown_false_rate: float
    unknown_purity: float
    noise_rate: float
    pairwise_f: float
    bcubed_p: float
    bcubed_r: float
    bcubed_f: float
    unknown_bcubed_f: float
    clusters: int


@dataclass
class EvalReport:
    photos: int = 0
    faces: int = 0
    people: int = 0
    known_people: int = 0
    labelled_faces: int = 0
    same_photo_conflicts: int = 0
    seconds: float = 0.0
    rows: list[MethodScores] = field(default_factory=list)

    @property
    def ours(self) -> MethodScores:
        return self.rows[0]

    def table(self) -> str:
        head = f"{'method':<28}{'assignP':>8}{'assignR':>8}{'unkFA':>7}{'purity':>8}{'noise':>7}{'pairF':>7}{'B3 P':>7}{'B3 R':>7}{'B3 F':>7}{'unkB3F':>8}{'clust':>6}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            lines.append(
                f"{r.name:<28}{r.assign_precision:>8.3f}{r.assign_recall:>8.3f}{r.unknown_false_rate:>7.3f}{r.unknown_purity:>8.3f}"
                f"{r.noise_rate:>7.3f}{r.pairwise_f:>7.3f}{r.bcubed_p:>7.3f}{r.bcubed_r:>7.3f}{r.bcubed_f:>7.3f}{r.unknown_bcubed_f:>8.3f}{r.clusters:>6}"
            )
        return "\n".join(lines)


def _labelled_face(faces: list[FaceInstance], width: int, height: int) -> FaceInstance:
    """The photo's subject: central and large (a stranger at the edge must not be mistaken for them)."""
    cx, cy, diag = width / 2, height / 2, max(width, height)

    def cost(f: FaceInstance) -> float:
        fx, fy = (f.x1 + f.x2) / 2, (f.y1 + f.y2) / 2
        return float(np.hypot(fx - cx, fy - cy) / diag - 0.5 * (f.x2 - f.x1) / max(width, 1))

    return min(faces, key=cost)


def _score(name: str, truth: list, pred: list, assigned: list, known: set, labelled_mask: np.ndarray, unknown_mask: np.ndarray, noise_mask: np.ndarray) -> MethodScores:
    """Metrics of one method. ``pred``: final group per face (person / cluster / unique noise id);
    ``assigned``: the known person a face was given (None if not), for the faces that were not labelled."""
    eval_idx = np.flatnonzero(~labelled_mask)
    a = assignment_score([truth[i] for i in eval_idx], [assigned[i] for i in eval_idx], known)
    unk = np.flatnonzero(unknown_mask & ~noise_mask & np.array([assigned[i] is None for i in range(len(truth))]))
    pur = purity([truth[i] for i in unk], [pred[i] for i in unk]) if len(unk) else 1.0
    unassigned = np.array([assigned[i] is None for i in range(len(truth))]) & ~labelled_mask
    noise_rate = float((noise_mask & unassigned).sum() / max(1, unassigned.sum()))
    b3 = bcubed_prf(truth, pred)
    u_idx = np.flatnonzero(unknown_mask)
    clusters = len({p for i, p in enumerate(pred) if not noise_mask[i]})
    return MethodScores(
        name=name, assign_precision=a.precision, assign_recall=a.recall, unknown_false_rate=a.unknown_false_rate,
        unknown_purity=pur, noise_rate=noise_rate, pairwise_f=pairwise_prf(truth, pred).f1, bcubed_p=b3.precision,
        bcubed_r=b3.recall, bcubed_f=b3.f1, unknown_bcubed_f=bcubed_prf([truth[i] for i in u_idx], [pred[i] for i in u_idx]).f1,
        clusters=clusters,
    )


def _name_clusters(raw_labels: np.ndarray, label_of: dict[int, str]) -> tuple[list, list]:
    """Baseline naming: a cluster whose labelled faces are all one person takes that name; returns (pred, assigned)."""
    votes: dict[int, Counter] = defaultdict(Counter)
    for i, name in label_of.items():
        if raw_labels[i] >= 0:
            votes[int(raw_labels[i])][name] += 1
    names = {c: next(iter(v)) for c, v in votes.items() if len(v) == 1}
    pred, assigned = [], []
    for i, c in enumerate(raw_labels):
        c = int(c)
        if i in label_of:
            pred.append(("person", label_of[i]))
            assigned.append(label_of[i])
        elif c >= 0 and c in names:
            pred.append(("person", names[c]))
            assigned.append(names[c])
        elif c >= 0:
            pred.append(("cluster", c))
            assigned.append(None)
        else:
            pred.append(("noise", i))
            assigned.append(None)
    return pred, assigned


def evaluate(
    labelled_dir: Path,
    *,
    k_labels: int = 3,
    known_every: int = 2,
    seed: int = 0,
    home: Path | None = None,
    settings_overrides: dict | None = None,
    models: FaceModels | None = None,
    baselines: bool = True,
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    labelled_dir = Path(labelled_dir)
    people = sorted(p.name for p in labelled_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(people) < 2:
        raise ValueError(f"{labelled_dir} must hold one sub-folder per person (found {len(people)})")
    tmp = None
    if home is None:
        tmp = tempfile.TemporaryDirectory(prefix="face_eval_")
        home = Path(tmp.name)
    settings = Settings(home=home, **(settings_overrides or {}))
    prepare_home(settings, set_dagster_home=False)
    models = models or FaceModels(settings)
    from face_pipeline.core.vectors import FaceVectorStore, open_vector_client

    say(f"ingesting {labelled_dir}")
    ingest.register_batch(settings, "evaluation", labelled_dir)
    ingest.detect_batch(settings, "evaluation", models)
    with open_vector_client(settings) as client:
        ingest.embed_batch(settings, "evaluation", models, FaceVectorStore(client, settings.qdrant_collection))

    # Ground truth per face.
    truth: dict[str, str] = {}
    subject_faces: dict[str, list[str]] = defaultdict(list)  # person → their labelled-face ids (one per photo)
    with session_scope(settings.sql_url) as s:
        faces_by_image: dict[str, list[FaceInstance]] = defaultdict(list)
        for f in s.scalars(select(FaceInstance)):
            faces_by_image[f.image_id].append(f)
        photos = s.scalars(select(Photo).where(Photo.status == "ok")).all()
        for ph in photos:
            person = Path(ph.rel_path).parts[0]
            faces = faces_by_image.get(ph.image_id, [])
            if not faces:
                continue
            subject = _labelled_face(faces, ph.width or 1, ph.height or 1)
            for f in faces:
                truth[f.face_id] = person if f is subject else f"stranger:{f.face_id}"
            subject_faces[person].append(subject.face_id)
    known = set(people[::known_every])
    rng = np.random.default_rng(seed)
    labelled: dict[str, str] = {}
    for person in sorted(known):
        ids = sorted(subject_faces.get(person, []))
        for fid in rng.permutation(ids)[: min(k_labels, len(ids))]:
            labelled[str(fid)] = person
    say(f"labelling {len(labelled)} faces of {len(known)} people")
    for fid, person in sorted(labelled.items()):
        labels.label_face(settings, fid, person, actor="evaluate", reason="evaluation protocol")

    say("assigning and clustering")
    organize.supervised_assignment(settings)
    organize.cluster_unknown(settings)

    with session_scope(settings.sql_url) as s:
        names = dict(s.execute(select(Person.person_id, Person.name)).all())
        state = {f.face_id: (f.person_id, f.cluster_id) for f in s.scalars(select(FaceInstance))}
    face_ids = sorted(f for f in truth if f in state)
    t = [truth[f] for f in face_ids]
    labelled_mask = np.array([f in labelled for f in face_ids])
    unknown_mask = np.array([x not in known for x in t])
    pred, assigned, noise = [], [], []
    for f in face_ids:
        pid, cid = state[f]
        if pid is not None:
            pred.append(("person", names.get(pid, pid)))
            assigned.append(names.get(pid, pid))
            noise.append(False)
        elif face_state.is_unknown_cluster(cid):
            pred.append(("cluster", cid))
            assigned.append(None)
            noise.append(False)
        else:
            pred.append(("noise", f))
            assigned.append(None)
            noise.append(True)
    report = EvalReport(
        photos=len({f.rsplit("_face", 1)[0] for f in face_ids}), faces=len(face_ids), people=len(people), known_people=len(known),
        labelled_faces=len(labelled), same_photo_conflicts=len(organize.same_photo_conflicts(settings)),
    )
    ours = f"face_pipeline ({settings.unknown_method})"
    report.rows.append(_score(ours, t, pred, assigned, known, labelled_mask, unknown_mask, np.array(noise)))

    if baselines:
        say("running baselines")
        ids, X = load_embeddings(settings, face_ids)
        assert ids == face_ids
        label_of = {i: labelled[f] for i, f in enumerate(face_ids) if f in labelled}
        runs = {name: (lambda fn=fn: fn(X)) for name, fn in ANCHORS.items()}
        for name, fn in runs.items():
            raw = np.asarray(fn())
            b_pred, b_assigned = _name_clusters(raw, label_of)
            b_noise = np.array([p[0] == "noise" for p in b_pred])
            report.rows.append(_score(name, t, b_pred, b_assigned, known, labelled_mask, unknown_mask, b_noise))
    report.seconds = time.perf_counter() - t0
    if tmp is not None:
        tmp.cleanup()
    return report
