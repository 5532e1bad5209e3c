"""The clustering of everyone, remembered between the steps of one organise.

A full organise clusters every face at the link threshold twice with identical inputs: once as evidence for the
naming rules (``supervised_assignments``) and once for the unknown clusters (``unknown_clusters``, the next
asset, often another process). Labels never steer that clustering (see :mod:`face_pipeline.core.cluster`), so
naming faces between the two steps does not change it. It is the most expensive part of organising a large
library, so the first step writes its result to the home's cache folder and the second reads it back.

The file is keyed by a digest of everything the result depends on: the vectors (bytes), face and photo ids in
order, the method and its parameters (the faces' quality among them), people's must/cannot-link answers and the
clustering code itself. Any difference — a new batch, a
deleted face, a new answer, another threshold — is a miss and the clustering is computed again, so a stale file
can cost time but never change a result. Deleting the folder is always safe.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

FILE_NAME = "everyone_clusters.npz"


@functools.cache
def code_version() -> str:
    """Digest of the clustering code itself (this package's clustering modules), so an upgrade never reuses a
    clustering an older version computed."""
    h = hashlib.blake2b(digest_size=8)
    for f in sorted(Path(__file__).parent.glob("*.py")) + [Path(__file__).parents[1] / "cluster.py"]:
        h.update(f.read_bytes())
    return h.hexdigest()


def digest(X: np.ndarray, face_ids: Sequence[str], image_ids: Sequence[str], params: dict,
           must: Sequence[tuple[int, int]], cannot: Sequence[tuple[int, int]]) -> str:
    """Hex digest of a clustering's inputs (vectors hashed in place: no copy of a 2 GB array at 1M faces)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(memoryview(np.ascontiguousarray(X, dtype=np.float32)).cast("B"))
    for part in (face_ids, image_ids):
        h.update("\x1f".join(map(str, part)).encode())
        h.update(b"\x1e")
    h.update(repr(sorted(params.items())).encode())
    h.update(repr(sorted((min(a, b), max(a, b)) for a, b in must)).encode())
    h.update(repr(sorted((min(a, b), max(a, b)) for a, b in cannot)).encode())
    return h.hexdigest()


def digest_values(values: np.ndarray) -> str:
    """Short hex digest of a per-face array of numbers (NaN = unknown): a clustering input such as the faces'
    quality, folded into ``params`` by callers that use it."""
    return hashlib.blake2b(memoryview(np.ascontiguousarray(values, dtype=np.float64)).cast("B"), digest_size=12).hexdigest()


def remembered(folder: Path, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The labels stored under ``key`` in ``folder``, else ``compute()`` (stored for the next step).

    One file: only the latest clustering is worth keeping. An unreadable file is a miss, never an error."""
    path = folder / FILE_NAME
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) == key:
                return np.asarray(data["labels"], dtype=np.int64)
    except (OSError, ValueError, KeyError, EOFError):
        pass
    labels = np.asarray(compute(), dtype=np.int64)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{FILE_NAME}.{os.getpid()}.tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, key=np.asarray(key), labels=labels)
        tmp.replace(path)  # readers never see half a file
    except OSError:
        pass  # a read-only or full disk costs the next step time, not correctness
    return labels
