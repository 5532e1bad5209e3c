"""``face-pipeline doctor``: do SQL, the embedding files and the vector store agree? And ``--repair``.

SQL is the source of truth for which faces exist and who they are. Two copies of every vector hang off it: the
per-batch embedding files (what clustering and labels read) and the Qdrant collection (what search reads). When
either copy is missing or disagrees, commands quietly answer on part of the library — clustering that sees no
labels, a search that returns unrelated faces, an export with null vectors. ``diagnose`` names every such problem;
``require_ready`` turns them into a LibraryNotReady that those commands raise instead of answering wrongly;
``repair`` rebuilds the copies (files from the vector store, from the batch's crops, or from the photos with the
models; the vector store from SQL + the files) and never touches a label, a person or a cluster.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy import select

from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import FaceInstance, Photo, PHOTO_OK, PHOTO_NO_FACES
from face_pipeline.core.embedding_files import (
    embeddings_path,
    has_batch_embeddings,
    read_batch_embeddings,
    save_batch_embeddings,
)
from face_pipeline.core.errors import LibraryNotReady
from face_pipeline.core.vectors import FaceRecord, FaceVectorStore
from face_pipeline.settings import Settings

SAMPLE = 64  # vectors compared between the files and the vector store per check
SAME_VECTOR = 0.999  # cosine: the two copies of one vector must be (numerically) identical

# problem kinds
FILE_MISSING, FILE_UNREADABLE, FILE_IDS = "embedding_file_missing", "embedding_file_unreadable", "embedding_file_ids"
STORE_MISSING, STORE_IDS, STORE_VECTORS, STORE_PAYLOAD = "vector_store_missing", "vector_store_ids", "vector_store_vectors", "vector_store_payload"
NOT_EMBEDDED = "faces_not_embedded"


@dataclass
class Problem:
    kind: str
    message: str
    batch: str | None = None
    faces: int = 0


@dataclass
class DoctorReport:
    sql_faces: int = 0
    sql_embedded: int = 0
    file_faces: int = 0
    store_points: int | None = None  # None: not checked (busy or skipped)
    vectors_compared: int = 0
    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.healthy:
            store = "not checked" if self.store_points is None else f"{self.store_points} vectors in the store"
            return f"library healthy: {self.sql_embedded} embedded faces in SQL, {self.file_faces} in the embedding files, {store}"
        return f"{len(self.problems)} problem(s): " + "; ".join(p.message for p in self.problems)

    def as_metadata(self) -> dict:
        return {"sql_faces": self.sql_faces, "sql_embedded_faces": self.sql_embedded, "embedding_file_faces": self.file_faces,
                "vector_store_points": -1 if self.store_points is None else self.store_points,
                "vectors_compared": self.vectors_compared, "problems": len(self.problems),
                "problem": self.summary() if self.problems else "none"}


def _sql_faces(settings: Settings) -> tuple[dict[str, dict[str, str | None]], dict[str, int]]:
    """batch → {embedded face_id: person_id}, and batch → number of faces NOT embedded yet."""
    embedded: dict[str, dict[str, str | None]] = defaultdict(dict)
    pending: dict[str, int] = defaultdict(int)
    with session_scope(settings.sql_url) as s:
        for fid, batch, person, is_embedded in s.execute(select(FaceInstance.face_id, FaceInstance.batch, FaceInstance.person_id, FaceInstance.embedded)):
            if is_embedded:
                embedded[batch][fid] = person
            else:
                pending[batch] += 1
    return embedded, pending


def _check_files(settings: Settings, embedded: dict[str, dict], report: DoctorReport) -> dict[str, np.ndarray]:
    """Per-batch file checks; returns face_id → vector of every readable file (for the sample comparison)."""
    vectors: dict[str, np.ndarray] = {}
    for batch in sorted(embedded):
        want = embedded[batch]
        if not has_batch_embeddings(settings, batch):
            report.problems.append(Problem(FILE_MISSING, f"batch {batch}: embedding file {embeddings_path(settings, batch)} is missing "
                                           f"({len(want)} embedded faces in SQL)", batch, len(want)))
            continue
        try:
            got = read_batch_embeddings(settings, batch)
        except LibraryNotReady as exc:
            report.problems.append(Problem(FILE_UNREADABLE, f"batch {batch}: {exc}".split("; run `")[0], batch, len(want)))
            continue
        fids, vecs = got
        report.file_faces += len(fids)
        missing, extra = set(want) - set(fids), set(fids) - set(want)
        if missing or extra:
            report.problems.append(Problem(FILE_IDS, f"batch {batch}: the embedding file lacks {len(missing)} and has {len(extra)} "
                                           f"unknown of its {len(want)} faces (e.g. {sorted(missing | extra)[0]})", batch, len(missing) + len(extra)))
        vectors.update(zip(fids, vecs))
    return vectors


def _check_store(settings: Settings, store: FaceVectorStore, embedded: dict[str, dict], vectors: dict[str, np.ndarray], report: DoctorReport) -> None:
    sql = {fid: person for faces in embedded.values() for fid, person in faces.items()}
    if not store.exists():
        report.store_points = 0
        if sql:
            report.problems.append(Problem(STORE_MISSING, f"the vector store has no collection {store.alias} "
                                           f"({len(sql)} embedded faces in SQL)", None, len(sql)))
        return
    points = {r.face_id: r.payload.get("person_id") for r in store.iter_records(with_vectors=False)}
    report.store_points = len(points)
    missing, extra = set(sql) - set(points), set(points) - set(sql)
    if missing or extra:
        report.problems.append(Problem(STORE_IDS, f"the vector store lacks {len(missing)} and has {len(extra)} unknown of "
                                       f"{len(sql)} faces (e.g. {sorted(missing | extra)[0]})", None, len(missing) + len(extra)))
    # A face a person just labelled is ``payload_dirty``: label operations write SQL only and the next pipeline run
    # pushes its payload, so a difference there is pending, not damage.
    with session_scope(settings.sql_url) as s:
        pending_push = set(s.scalars(select(FaceInstance.face_id).where(FaceInstance.payload_dirty.is_(True))))
    stale = [f for f in set(sql) & set(points) if sql[f] != points[f] and f not in pending_push]
    if stale:
        report.problems.append(Problem(STORE_PAYLOAD, f"{len(stale)} faces have another person in the vector store than in SQL "
                                       f"(e.g. {sorted(stale)[0]})", None, len(stale)))
    common = sorted(set(vectors) & set(points))
    if common:
        rng = np.random.default_rng(0)
        sample = [common[i] for i in sorted(rng.choice(len(common), size=min(SAMPLE, len(common)), replace=False))]
        stored = store.vectors_for(sample)
        differ = [f for f in sample if f in stored and float(np.dot(stored[f], vectors[f]) /
                                                            max(1e-12, np.linalg.norm(stored[f]) * np.linalg.norm(vectors[f]))) < SAME_VECTOR]
        report.vectors_compared = len(sample)
        if differ:
            report.problems.append(Problem(STORE_VECTORS, f"{len(differ)} of {len(sample)} sampled vectors differ between the "
                                           f"vector store and the embedding files (e.g. {differ[0]})", None, len(differ)))


def diagnose(settings: Settings, store: FaceVectorStore | None) -> DoctorReport:
    """Every disagreement between SQL, the embedding files and (when given) the vector store, named."""
    embedded, pending = _sql_faces(settings)
    report = DoctorReport(sql_faces=sum(len(v) for v in embedded.values()) + sum(pending.values()),
                          sql_embedded=sum(len(v) for v in embedded.values()))
    for batch, n in sorted(pending.items()):
        report.problems.append(Problem(NOT_EMBEDDED, f"batch {batch}: {n} detected faces were never embedded "
                                       "(the ingest stopped half-way)", batch, n))
    vectors = _check_files(settings, embedded, report)
    if store is not None:
        _check_store(settings, store, embedded, vectors, report)
    return report


def require_ready(settings: Settings, store: FaceVectorStore | None = None) -> None:
    """Raise LibraryNotReady with the doctor's findings when an answer computed now would be wrong.

    Faces not embedded yet are left out (an ingest may be running); missing or broken copies are not."""
    report = diagnose(settings, store)
    blocking = [p for p in report.problems if p.kind != NOT_EMBEDDED]
    if blocking:
        raise LibraryNotReady("the library is damaged: " + "; ".join(p.message for p in blocking)
                              + " — run `face-pipeline doctor --repair`")


# ---------------------------------------------------------------------------------------------------- repair ----
def _batch_faces(settings: Settings, batch: str) -> list[FaceInstance]:
    with session_scope(settings.sql_url) as s:
        rows = list(s.scalars(select(FaceInstance).where(FaceInstance.batch == batch, FaceInstance.embedded.is_(True))
                              .order_by(FaceInstance.face_id)))
        s.expunge_all()
    return rows


def _from_store(store: FaceVectorStore | None, face_ids: list[str]) -> dict[str, np.ndarray]:
    if store is None or not store.exists() or not face_ids:
        return {}
    out: dict[str, np.ndarray] = {}
    for i in range(0, len(face_ids), 1000):
        out.update(store.vectors_for(face_ids[i : i + 1000]))
    return out


def _from_crops(settings: Settings, batch: str, face_ids: list[str], models) -> dict[str, np.ndarray]:
    import json

    from face_pipeline.core.models import l2_normalize

    folder = settings.artifacts_dir / "batches" / batch
    try:
        crops = np.load(folder / "crops.npy", allow_pickle=False)
        ids = json.loads((folder / "crops.json").read_text())
    except (OSError, ValueError):
        return {}
    index = {f: i for i, f in enumerate(ids) if i < len(crops)}
    wanted = [f for f in face_ids if f in index]
    if not wanted:
        return {}
    vecs = l2_normalize(models.embed([crops[index[f]] for f in wanted]))
    return dict(zip(wanted, vecs))


def _from_photos(settings: Settings, faces: list[FaceInstance], models) -> dict[str, np.ndarray]:
    from face_pipeline.core.models import l2_normalize
    from face_pipeline.core.photos import PhotoError, load_photo

    with session_scope(settings.sql_url) as s:
        paths = dict(s.execute(select(Photo.image_id, Photo.path).where(
            Photo.image_id.in_({f.image_id for f in faces}), Photo.status.in_([PHOTO_OK, PHOTO_NO_FACES]))).all())
    out: dict[str, np.ndarray] = {}
    by_image: dict[str, list[FaceInstance]] = defaultdict(list)
    for f in faces:
        by_image[f.image_id].append(f)
    for image_id, group in by_image.items():
        if image_id not in paths or not Path(paths[image_id]).is_file():
            continue
        try:
            photo = load_photo(Path(paths[image_id]), settings.max_image_pixels)
        except PhotoError:
            continue
        crops = [models.align(photo.image, np.asarray(f.landmarks, dtype=np.float32)) for f in group]
        out.update(zip([f.face_id for f in group], l2_normalize(models.embed(crops))))
    return out


def repair(settings: Settings, store: FaceVectorStore, models_factory: Callable[[], object],
           say: Callable[[str], None] | None = None) -> DoctorReport:
    """Rebuild what can be rebuilt, then diagnose again. Labels, persons and clusters are never written.

    1. each batch whose embedding file is missing, unreadable or lists other faces than SQL: rebuilt from the
       vector store's vectors, else from the batch's aligned crops, else from the photos (stored landmarks);
    2. the vector store: created if missing, every face of SQL written from the files with its SQL payload,
       points SQL does not know deleted, differing vectors rewritten."""
    from face_pipeline.core.face_state import payload_of

    say = say or (lambda _m: None)
    t0 = time.perf_counter()
    before = diagnose(settings, store)
    done: list[str] = []
    models = None
    file_batches = sorted({p.batch for p in before.problems if p.kind in (FILE_MISSING, FILE_UNREADABLE, FILE_IDS) and p.batch})
    for batch in file_batches:
        faces = _batch_faces(settings, batch)
        ids = [f.face_id for f in faces]
        vecs = _from_store(store, ids)
        source = "the vector store"
        if len(vecs) < len(ids):
            models = models or models_factory()
            vecs.update(_from_crops(settings, batch, [f for f in ids if f not in vecs], models))
            source = "the vector store and the batch's crops" if vecs else "the batch's crops"
        if len(vecs) < len(ids):
            vecs.update(_from_photos(settings, [f for f in faces if f.face_id not in vecs], models))
            source += " and the photos"
        kept = [f for f in ids if f in vecs]
        save_batch_embeddings(settings, batch, kept, np.stack([vecs[f] for f in kept]) if kept else np.zeros((0, 512), np.float32))
        msg = f"batch {batch}: embedding file rebuilt with {len(kept)} of {len(ids)} faces from {source}"
        if len(kept) < len(ids):
            msg += f" ({len(ids) - len(kept)} could not be rebuilt: their photos are gone; re-ingest the batch)"
        done.append(msg)
        say(msg)

    mid = diagnose(settings, store)
    if any(p.kind.startswith("vector_store") for p in mid.problems):
        embedded, _ = _sql_faces(settings)
        store.ensure()
        records: list[FaceRecord] = []
        sql_ids = {f for faces in embedded.values() for f in faces}
        for batch in sorted(embedded):
            got = read_batch_embeddings(settings, batch)
            if got is None:
                continue
            vec_of = dict(zip(*got))
            for face in _batch_faces(settings, batch):
                if face.face_id in vec_of:
                    records.append(FaceRecord(face.face_id, vec_of[face.face_id], payload_of(face, batch)))
        extra = [r.face_id for r in store.iter_records(with_vectors=False) if r.face_id not in sql_ids]
        store.delete(extra)
        store.upsert(records)
        msg = f"vector store rebuilt: {len(records)} faces written from SQL and the embedding files, {len(extra)} unknown points removed"
        done.append(msg)
        say(msg)
    after = diagnose(settings, store)
    after.repaired = done
    say(f"repair took {time.perf_counter() - t0:.1f}s")
    return after
