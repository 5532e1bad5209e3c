"""Ingest one photo batch: scan → hash → decode → detect → align (``detect_batch``), then embed → SQL +
Qdrant (``embed_batch``).

The two halves are separate Dagster assets, so the aligned 112×112 crops are handed over through an artifact
file (``artifacts/batches/<batch>/crops.npy``) instead of decoding every photo twice.

Safety rules that live here:
- a bad photo is recorded (status ``failed`` + reason) and the batch goes on;
- re-running a batch replaces that batch's photos and faces: face ids are deterministic
  (``{image_id}_face{n}``), and people's labels on surviving faces are kept;
- a photo whose content was already ingested (in any batch) is recorded as ``duplicate`` of the first copy
  and is neither detected nor embedded again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy import delete, select

from face_pipeline.core import face_state
from face_pipeline.core.db import session_scope
from face_pipeline.core.errors import Conflict
from face_pipeline.core.db.schema import (
    PHOTO_DUPLICATE,
    PHOTO_FAILED,
    PHOTO_NO_FACES,
    PHOTO_OK,
    PERSON_ACTIVE,
    PIPELINE_ACTOR,
    SOURCE_MANUAL,
    FaceAssignmentEvent,
    FaceInstance,
    Person,
    Photo,
    PhotoBatch,
    utcnow,
)
from face_pipeline.core.embedding_files import drop_faces_from_batch, save_batch_embeddings
from face_pipeline.core.faults import fault_point
from face_pipeline.core.models import FaceModels, l2_normalize, quality_score
from face_pipeline.core.photos import PhotoError, content_hash, load_photo, scan_photos
from face_pipeline.core.vectors import FaceRecord, FaceVectorStore
from face_pipeline.settings import Settings

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


def image_id_for(sha256_hex: str) -> str:
    """Content-derived photo id: the same picture anywhere gets the same id (and so the same face ids)."""
    return sha256_hex[:16]


def face_id_for(image_id: str, n: int) -> str:
    return f"{image_id}_face{n}"


def batch_dir(settings: Settings, batch: str) -> Path:
    return settings.artifacts_dir / "batches" / batch


@dataclass
class DetectionReport:
    batch: str
    photos: int = 0
    ok: int = 0
    no_faces: int = 0
    failed: int = 0
    duplicates: int = 0
    faces: int = 0
    faces_removed: int = 0
    moved_in: int = 0  # photos that moved here from another batch's folder (their faces and labels came along)
    skipped: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    seconds: float = 0.0

    @property
    def photos_per_s(self) -> float:
        return self.photos / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "photos_per_s": round(self.photos_per_s, 2)}


@dataclass
class EmbeddingReport:
    batch: str
    faces: int = 0
    seconds: float = 0.0
    mean_quality: float = 0.0
    low_quality: int = 0
    model: str = ""
    face_ids: list[str] = field(default_factory=list)

    @property
    def faces_per_s(self) -> float:
        return self.faces / self.seconds if self.seconds > 0 else 0.0


def register_batch(settings: Settings, batch: str, folder: Path) -> str:
    """Create the batch ``batch`` for ``folder`` (or confirm it): one batch per folder, one folder per batch.

    Refuses (Conflict, before anything is written) a name that already belongs to another folder that still
    exists — the second folder would otherwise replace the first one's photos and faces. A batch whose folder has
    disappeared (moved or renamed) is re-pointed. Returns the batch name."""
    from face_pipeline.core.inbox import folder_key, validate_batch_name

    batch = validate_batch_name(batch)
    folder = Path(folder).resolve()
    key = folder_key(folder)
    with session_scope(settings.sql_url) as s:
        owner = s.scalars(select(PhotoBatch).where(PhotoBatch.folder_key == key)).first()
        if owner is not None and owner.name != batch:
            raise Conflict(f"folder {folder} is already batch {owner.name!r}; ingest it again with --batch {owner.name} "
                           "(or without --batch)")
        row = s.get(PhotoBatch, batch)
        if row is None:
            s.add(PhotoBatch(name=batch, source_dir=str(folder), folder_key=key))
        elif row.folder_key != key:
            old = Path(row.source_dir)
            if row.folder_key is not None and old.is_dir() and old != folder:
                raise Conflict(f"batch {batch!r} is already the folder {old}; choose another --batch name for {folder}")
            row.source_dir, row.folder_key = str(folder), key  # the batch's folder moved (or a pre-0003 row)
    return batch


def batch_for_folder(settings: Settings, folder: Path, requested: str | None = None) -> str:
    """The batch of ``folder``, registered if new: ``requested`` if given (validated), else the folder's existing
    batch, else the first free readable name (``trip``, ``2024_trip``, ``trip-1a2b3c4d``)."""
    from face_pipeline.core.inbox import folder_key, name_candidates

    if requested is not None:
        return register_batch(settings, requested, folder)
    key = folder_key(folder)
    with session_scope(settings.sql_url) as s:
        owner = s.scalars(select(PhotoBatch.name).where(PhotoBatch.folder_key == key)).first()
        if owner is None:
            legacy = s.scalars(select(PhotoBatch.name).where(PhotoBatch.folder_key.is_(None),
                                                             PhotoBatch.source_dir == str(Path(folder).resolve()))).first()
            owner = legacy
        taken = set(s.scalars(select(PhotoBatch.name)))
    if owner is not None:
        return register_batch(settings, owner, folder)
    name = next(n for n in name_candidates(folder) if n not in taken)
    return register_batch(settings, name, folder)


def batch_source(settings: Settings, batch: str) -> Path:
    with session_scope(settings.sql_url) as s:
        row = s.get(PhotoBatch, batch)
        if row is None:
            raise KeyError(f"batch {batch!r} is not registered (ingest it with `face-pipeline ingest DIR --batch {batch}`)")
        return Path(row.source_dir)


@dataclass
class _FaceRow:
    face_id: str
    image_id: str
    face_index: int
    bbox: tuple[float, float, float, float]
    landmarks: list
    det_score: float


def _owners_of(settings: Settings, image_ids: list[str], batch: str) -> dict[str, tuple[str, str, str]]:
    """image_id → (batch, relative path, absolute path) of the photo that already holds its faces in another batch."""
    if not image_ids:
        return {}
    out: dict[str, tuple[str, str, str]] = {}
    with session_scope(settings.sql_url) as s:
        for i in range(0, len(image_ids), 500):
            chunk = image_ids[i : i + 500]
            rows = s.execute(
                select(Photo.image_id, Photo.batch, Photo.rel_path, Photo.path).where(
                    Photo.image_id.in_(chunk), Photo.batch != batch, Photo.status.in_([PHOTO_OK, PHOTO_NO_FACES])
                ).order_by(Photo.id)
            ).all()
            for image_id, other_batch, rel, path in rows:
                out.setdefault(image_id, (other_batch, rel, path))
    return out


def detect_batch(settings: Settings, batch: str, models: FaceModels, progress: Progress | None = None) -> DetectionReport:
    """Detect every face of a registered batch and write photos + faces to SQL and crops to artifacts."""
    t0 = time.perf_counter()
    folder = batch_source(settings, batch)
    if not folder.is_dir():
        raise FileNotFoundError(f"batch {batch!r}: folder {folder} does not exist")
    scan = scan_photos(folder)
    report = DetectionReport(batch=batch, photos=len(scan.photos), skipped=dict(scan.skipped))

    # Pass 1: hash everything (cheap) to find duplicates before spending detector time on them.
    hashes: dict[Path, str | PhotoError] = {}
    for path in scan.photos:
        try:
            hashes[path] = content_hash(path)
        except PhotoError as exc:
            hashes[path] = exc
    owners = _owners_of(settings, sorted({image_id_for(h) for h in hashes.values() if isinstance(h, str)}), batch)
    # Content identity wins: a photo whose first copy is gone from disk has MOVED here (it is not a duplicate of a
    # path that no longer exists); this batch takes over its faces, with their labels.
    moved = {img: owner for img, (owner, _rel, path) in owners.items() if not Path(path).is_file()}
    owners = {img: o for img, o in owners.items() if img not in moved}

    photo_rows: list[dict] = []
    faces: list[_FaceRow] = []
    crops: list[np.ndarray] = []
    seen_in_batch: dict[str, str] = {}
    for n, path in enumerate(scan.photos, 1):
        rel = str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)
        row = {"batch": batch, "path": str(path), "rel_path": rel, "image_id": None, "content_hash": None,
               "width": None, "height": None, "status": PHOTO_FAILED, "reason": None, "faces": 0}
        digest = hashes[path]
        try:
            if isinstance(digest, PhotoError):
                raise digest
            image_id = image_id_for(digest)
            row.update(image_id=image_id, content_hash=digest)
            first = (f"{owners[image_id][0]}/{owners[image_id][1]}" if image_id in owners else None) or seen_in_batch.get(image_id)
            if first is not None:
                row.update(status=PHOTO_DUPLICATE, reason=f"same content as {first}")
                report.duplicates += 1
            else:
                photo = load_photo(path, settings.max_image_pixels)
                row.update(width=photo.width, height=photo.height)
                found = models.detect(photo.image)
                for i, face in enumerate(found):
                    faces.append(_FaceRow(face_id_for(image_id, i), image_id, i, face.bbox, face.landmarks.tolist(), face.det_score))
                    crops.append(models.align(photo.image, face.landmarks))
                row.update(status=PHOTO_OK if found else PHOTO_NO_FACES, faces=len(found),
                           reason="; ".join(photo.notes) or None)
                seen_in_batch[image_id] = f"{batch}/{rel}"
                report.ok += bool(found)
                report.no_faces += not found
                report.faces += len(found)
        except PhotoError as exc:
            row.update(status=PHOTO_FAILED, reason=exc.reason)
            report.failed += 1
            report.failures.append((rel, exc.reason))
        except Exception as exc:  # a model error on one photo must not lose the batch
            log.exception("photo %s failed", path)
            row.update(status=PHOTO_FAILED, reason=f"processing error: {type(exc).__name__}: {exc}")
            report.failed += 1
            report.failures.append((rel, row["reason"]))
        photo_rows.append(row)
        fault_point("detection")
        if progress:
            progress(n, len(scan.photos))

    report.moved_in = len(moved)
    report.faces_removed = _write_detections(settings, batch, photo_rows, faces, report, moved)
    for other in sorted(set(moved.values())):  # their embedding files must not list the faces twice
        drop_faces_from_batch(settings, other, {f.face_id for f in faces if f.image_id in moved})
    _write_crops(settings, batch, faces, crops)
    report.seconds = time.perf_counter() - t0
    return report


def _write_detections(settings: Settings, batch: str, photo_rows: list[dict], faces: list[_FaceRow], report: DetectionReport,
                      moved: dict[str, str] | None = None) -> int:
    """Replace the batch's photos and faces in one transaction, keeping labels of faces that survive.

    ``moved`` (image_id → batch it moved from): those photos' rows leave the old batch and their faces join this
    one, labels included. A face that comes back after it was removed (its photo moved out and back, or was
    re-ingested after a pause) gets its manual label back from the removal event."""
    moved = moved or {}
    new_ids = {f.face_id for f in faces}
    with session_scope(settings.sql_url) as s:
        s.execute(delete(Photo).where(Photo.batch == batch))
        if moved:
            s.execute(delete(Photo).where(Photo.image_id.in_(list(moved)), Photo.batch != batch))
        s.add_all(Photo(**r) for r in photo_rows)
        existing = {f.face_id: f for f in s.scalars(select(FaceInstance).where(FaceInstance.batch == batch))}
        if moved:
            existing.update({f.face_id: f for f in s.scalars(select(FaceInstance).where(FaceInstance.image_id.in_(list(moved))))})
        removed = [f for fid, f in existing.items() if fid not in new_ids]
        for f in removed:
            if f.person_id:
                s.add(FaceAssignmentEvent(actor=PIPELINE_ACTOR, action="face_removed", face_id=f.face_id, from_person=f.person_id,
                                          reason="photo no longer in batch or face no longer detected",
                                          details={"assignment_source": f.assignment_source, "batch": f.batch}))
            s.delete(f)
        comeback = _removed_manual_labels(s, [f.face_id for f in faces if f.face_id not in existing])
        for f in faces:
            x1, y1, x2, y2 = f.bbox
            row = existing.get(f.face_id)
            if row is None:
                row = FaceInstance(face_id=f.face_id, image_id=f.image_id, batch=batch, face_index=f.face_index,
                                   x1=x1, y1=y1, x2=x2, y2=y2, landmarks=f.landmarks, det_score=f.det_score, embedded=False)
                if f.face_id in comeback:
                    face_state.assign(row, comeback[f.face_id], SOURCE_MANUAL)
                    s.add(FaceAssignmentEvent(actor=PIPELINE_ACTOR, action="face_restored", face_id=f.face_id, to_person=comeback[f.face_id],
                                              reason="the photo came back: its manual label is restored"))
                s.add(row)
            else:  # same face again: refresh geometry, keep who it is
                row.batch = batch
                row.x1, row.y1, row.x2, row.y2 = x1, y1, x2, y2
                row.landmarks, row.det_score, row.embedded = f.landmarks, f.det_score, False
        b = s.get(PhotoBatch, batch)
        b.status, b.detected_at = "detected", utcnow()
        b.photos, b.faces, b.failures = report.photos, report.faces, report.failed
    return len(removed)


def _removed_manual_labels(s, face_ids: list[str]) -> dict[str, str]:
    """face_id → person of faces whose last removal took a manual label with it (the person still active)."""
    out: dict[str, str] = {}
    for i in range(0, len(face_ids), 500):
        events = s.scalars(select(FaceAssignmentEvent).where(
            FaceAssignmentEvent.action == "face_removed", FaceAssignmentEvent.face_id.in_(face_ids[i : i + 500])
        ).order_by(FaceAssignmentEvent.id)).all()
        for e in events:  # the newest removal wins
            if (e.details or {}).get("assignment_source") == SOURCE_MANUAL and e.from_person:
                out[e.face_id] = e.from_person
            else:
                out.pop(e.face_id, None)
    if out:
        active = set(s.scalars(select(Person.person_id).where(Person.person_id.in_(set(out.values())), Person.status == PERSON_ACTIVE)))
        out = {f: p for f, p in out.items() if p in active}
    return out


def _write_crops(settings: Settings, batch: str, faces: list[_FaceRow], crops: list[np.ndarray]) -> None:
    out = batch_dir(settings, batch)
    out.mkdir(parents=True, exist_ok=True)
    arr = np.stack(crops) if crops else np.zeros((0, 112, 112, 3), dtype=np.uint8)
    np.save(out / "crops.npy", arr)
    (out / "crops.json").write_text(json.dumps([f.face_id for f in faces]))
    try:
        import pandas as pd

        pd.DataFrame([{"face_id": f.face_id, "image_id": f.image_id, "face_index": f.face_index,
                       "x1": f.bbox[0], "y1": f.bbox[1], "x2": f.bbox[2], "y2": f.bbox[3], "det_score": f.det_score} for f in faces],
                     columns=["face_id", "image_id", "face_index", "x1", "y1", "x2", "y2", "det_score"]).to_parquet(out / "detections.parquet", index=False)
    except Exception:  # parquet is a convenience artifact; SQL holds the facts
        log.exception("could not write detections.parquet for %s", batch)


def embed_batch(settings: Settings, batch: str, models: FaceModels, store: FaceVectorStore, progress: Progress | None = None) -> EmbeddingReport:
    """Embed the batch's crops, record quality in SQL and replace the batch's points in Qdrant."""
    t0 = time.perf_counter()
    folder = batch_dir(settings, batch)
    if not (folder / "crops.npy").exists():
        raise FileNotFoundError(f"batch {batch!r} has no detections yet: materialise face_detections first")
    crops = np.load(folder / "crops.npy")
    face_ids: list[str] = json.loads((folder / "crops.json").read_text())
    vectors = np.zeros((0, 512), dtype=np.float32)
    bs = max(1, settings.embed_batch_size)
    parts = []
    for i in range(0, len(face_ids), bs):
        parts.append(models.embed(list(crops[i : i + bs])))
        fault_point("embedding")
        if progress:
            progress(min(i + bs, len(face_ids)), len(face_ids))
    if parts:
        vectors = np.concatenate(parts)
    norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.zeros(0)
    unit = l2_normalize(vectors) if len(vectors) else vectors
    report = EmbeddingReport(batch=batch, faces=len(face_ids), model=models.model_name)

    records: list[FaceRecord] = []
    kept: list[int] = []
    with session_scope(settings.sql_url) as s:
        rows = {f.face_id: f for f in s.scalars(select(FaceInstance).where(FaceInstance.batch == batch))}
        qualities = []
        for i, (fid, vec, norm) in enumerate(zip(face_ids, unit, norms)):
            row = rows.get(fid)
            if row is None:  # the batch was re-detected after these crops were written: SQL wins
                continue
            kept.append(i)
            row.embedding_norm = float(norm)
            row.quality_score = quality_score(float(norm), row.det_score)
            row.embedding_model = models.model_name
            row.embedded = True
            row.payload_dirty = False
            qualities.append(row.quality_score)
            records.append(FaceRecord(fid, vec, face_state.payload_of(row, batch)))
        b = s.get(PhotoBatch, batch)
        b.status, b.embedded_at = "embedded", utcnow()
    fault_point("after_sql_commit")
    save_batch_embeddings(settings, batch, [face_ids[i] for i in kept], unit[kept] if len(unit) else unit)
    store.ensure()
    store.delete_batch(batch)
    fault_point("vector_write")
    store.upsert(records)
    report.faces = len(records)
    report.face_ids = [r.face_id for r in records]
    report.mean_quality = float(np.mean(qualities)) if qualities else 0.0
    report.low_quality = int(sum(q < 0.3 for q in qualities))
    report.seconds = time.perf_counter() - t0
    return report
