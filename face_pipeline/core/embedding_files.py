"""Per-batch embedding files: the analytic copy of the vectors, beside Qdrant.

Qdrant (local mode) admits one process at a time, and a pipeline run holds it for minutes. Clustering, label
operations and evaluation need every vector, from any process, at any time — so ``embed_batch`` also writes
``artifacts/batches/<batch>/embeddings.npy`` (float32, L2-normalised) with the face ids beside it. Reading
200k vectors from these files takes well under a second; scrolling them out of Qdrant takes far longer.
Qdrant stays the store for search and for the payload other tools read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from face_pipeline.settings import Settings


def _folder(settings: Settings, batch: str) -> Path:
    return settings.artifacts_dir / "batches" / batch


def save_batch_embeddings(settings: Settings, batch: str, face_ids: Sequence[str], vectors: np.ndarray) -> Path:
    folder = _folder(settings, batch)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "embeddings.tmp.npy"
    np.save(tmp, np.asarray(vectors, dtype=np.float32).reshape(len(face_ids), -1) if len(face_ids) else np.zeros((0, 512), np.float32))
    (folder / "embeddings.json.tmp").write_text(json.dumps(list(face_ids)))
    tmp.replace(folder / "embeddings.npy")  # rename: readers never see half a file
    (folder / "embeddings.json.tmp").replace(folder / "embeddings.json")
    return folder / "embeddings.npy"


def load_embeddings(settings: Settings, face_ids: Iterable[str] | None = None, batches: Iterable[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(face ids sorted, vectors (N,512)) of every embedded batch, optionally restricted to ``face_ids``."""
    root = settings.artifacts_dir / "batches"
    wanted = set(face_ids) if face_ids is not None else None
    names = sorted(batches) if batches is not None else (sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])
    ids: list[str] = []
    parts: list[np.ndarray] = []
    for name in names:
        folder = root / name
        if not (folder / "embeddings.npy").exists():
            continue
        vecs = np.load(folder / "embeddings.npy")
        fids = json.loads((folder / "embeddings.json").read_text())
        if wanted is not None:
            keep = [i for i, f in enumerate(fids) if f in wanted]
            vecs, fids = vecs[keep], [fids[i] for i in keep]
        ids.extend(fids)
        parts.append(vecs)
    if not ids:
        return [], np.zeros((0, 512), dtype=np.float32)
    X = np.concatenate(parts)
    order = np.argsort(np.asarray(ids, dtype=object))
    return [ids[i] for i in order], X[order]
