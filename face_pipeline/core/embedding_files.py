"""Per-batch embedding files: the analytic copy of the vectors, beside Qdrant.

Qdrant (local mode) admits one process at a time, and a pipeline run holds it for minutes. Clustering, label
operations and evaluation need every vector, from any process, at any time — so ``embed_batch`` also writes
``artifacts/batches/<batch>/embeddings.npz`` (``face_ids`` + ``vectors``: float32, L2-normalised). Reading 200k
vectors from these files takes well under a second; scrolling them out of Qdrant takes far longer. Qdrant stays
the store for search and for the payload other tools read.

One file holds both the ids and the vectors, written to a temporary name and renamed: a crash at any moment leaves
either the old file or the new one, never ids of one version beside vectors of another (the old layout,
``embeddings.npy`` + ``embeddings.json``, is still read). A file that cannot be read raises LibraryNotReady naming
the file and the command that rebuilds it (``face-pipeline doctor --repair``).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from face_pipeline.core.errors import LibraryNotReady
from face_pipeline.settings import Settings

FILE_NAME = "embeddings.npz"
LEGACY_VECTORS, LEGACY_IDS = "embeddings.npy", "embeddings.json"
DIM = 512


def _folder(settings: Settings, batch: str) -> Path:
    return settings.artifacts_dir / "batches" / batch


def embeddings_path(settings: Settings, batch: str) -> Path:
    return _folder(settings, batch) / FILE_NAME


def has_batch_embeddings(settings: Settings, batch: str) -> bool:
    folder = _folder(settings, batch)
    return (folder / FILE_NAME).is_file() or (folder / LEGACY_VECTORS).is_file()


def save_batch_embeddings(settings: Settings, batch: str, face_ids: Sequence[str], vectors: np.ndarray) -> Path:
    folder = _folder(settings, batch)
    folder.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(vectors, dtype=np.float32).reshape(len(face_ids), -1) if len(face_ids) else np.zeros((0, DIM), np.float32)
    final = folder / FILE_NAME
    tmp = folder / f".{FILE_NAME}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, face_ids=np.asarray(list(face_ids), dtype=str), vectors=arr)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(final)  # rename: readers never see half a file, nor ids and vectors of different versions
    for legacy in (LEGACY_VECTORS, LEGACY_IDS):
        (folder / legacy).unlink(missing_ok=True)
    return final


def read_batch_embeddings(settings: Settings, batch: str) -> tuple[list[str], np.ndarray] | None:
    """(face ids, vectors) of one batch; None when the batch has no embedding file; LibraryNotReady naming the
    file when it is unreadable (truncated, corrupted, ids and vectors of different lengths)."""
    folder = _folder(settings, batch)
    path = folder / FILE_NAME
    try:
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                fids, vecs = [str(f) for f in data["face_ids"]], np.asarray(data["vectors"], dtype=np.float32)
        elif (folder / LEGACY_VECTORS).is_file():
            path = folder / LEGACY_VECTORS
            vecs = np.load(path, allow_pickle=False)
            path = folder / LEGACY_IDS
            fids = json.loads(path.read_text())
        else:
            return None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise LibraryNotReady(f"embedding file {path} is unreadable ({type(exc).__name__}: {exc}); "
                              "run `face-pipeline doctor --repair` to rebuild it") from exc
    if vecs.ndim != 2 or len(fids) != len(vecs) or (len(vecs) and vecs.shape[1] != DIM):
        raise LibraryNotReady(f"embedding file {path} holds {len(fids)} ids but vectors of shape {vecs.shape}; "
                              "run `face-pipeline doctor --repair` to rebuild it")
    return fids, vecs


def batches_with_files(settings: Settings) -> list[str]:
    root = settings.artifacts_dir / "batches"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and has_batch_embeddings(settings, p.name))


def drop_faces_from_batch(settings: Settings, batch: str, face_ids: set[str]) -> int:
    """Remove faces (that moved to another batch) from one batch's embedding file; returns how many went."""
    got = read_batch_embeddings(settings, batch)
    if got is None or not face_ids:
        return 0
    fids, vecs = got
    keep = [i for i, f in enumerate(fids) if f not in face_ids]
    if len(keep) == len(fids):
        return 0
    save_batch_embeddings(settings, batch, [fids[i] for i in keep], vecs[keep])
    return len(fids) - len(keep)


def load_embeddings(settings: Settings, face_ids: Iterable[str] | None = None, batches: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(face ids sorted, vectors (N,512)) of every embedded batch, optionally restricted to ``face_ids``."""
    wanted = set(face_ids) if face_ids is not None else None
    names = sorted(batches) if batches is not None else batches_with_files(settings)
    ids: list[str] = []
    parts: list[np.ndarray] = []
    for name in names:
        got = read_batch_embeddings(settings, name)
        if got is None:
            continue
        fids, vecs = got
        if wanted is not None:
            keep = [i for i, f in enumerate(fids) if f in wanted]
            vecs, fids = vecs[keep], [fids[i] for i in keep]
        ids.extend(fids)
        parts.append(vecs)
    if not ids:
        return [], np.zeros((0, DIM), dtype=np.float32)
    X = np.concatenate(parts)
    order = np.argsort(np.asarray(ids, dtype=object))
    return [ids[i] for i in order], X[order]
