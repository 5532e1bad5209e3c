"""The photo inbox: each sub-folder of FACE_PHOTOS_INBOX is one batch.

A batch's fingerprint (number of files and newest modification time) lets the sensor notice both new folders
and photos added to a folder it already ingested, without reading any photo.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from face_pipeline.core.errors import InvalidInput

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_BATCH_NAME = 100
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]*")


def batch_name_for(folder: Path) -> str:
    """A partition-key-safe name for a folder (Dagster partition keys must not hold odd characters)."""
    return (_SAFE.sub("_", Path(folder).name).strip("_.") or "batch")[:MAX_BATCH_NAME]


def validate_batch_name(name: str) -> str:
    """The partition key of a name the user chose (``--batch``), or InvalidInput saying what is wrong.

    A batch name becomes a folder under ``artifacts/batches`` and a Dagster partition key, so it may hold letters,
    digits, ``.``, ``_``, ``-`` and spaces (stored as ``_``), must start with a letter or digit (no ``..``, no
    hidden folders), holds no path separator (``a/b/c`` used to be cut silently to ``c``) and is at most
    MAX_BATCH_NAME characters."""
    if not name or not name.strip():
        raise InvalidInput("--batch must not be empty")
    if "/" in name or "\\" in name or os.sep in name:
        raise InvalidInput(f"--batch {name!r} holds a path separator; a batch name is one word like 2024_trip")
    if len(name) > MAX_BATCH_NAME:
        raise InvalidInput(f"--batch is {len(name)} characters long; at most {MAX_BATCH_NAME} are allowed")
    if not _VALID.fullmatch(name) or ".." in name:
        raise InvalidInput(f"--batch {name!r} is not a valid batch name: use letters, digits, '.', '_', '-' and spaces, "
                           "starting with a letter or digit")
    return name.strip().replace(" ", "_")


def folder_key(folder: Path) -> str:
    """A batch's identity: SHA-256 of its folder's resolved path (two folders named ``trip`` differ here)."""
    return hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()


def name_candidates(folder: Path) -> list[str]:
    """Readable partition keys for a folder, most readable first: ``trip``, then ``2024_trip``, then
    ``trip-<8 hex of the folder key>`` (always unique)."""
    folder = Path(folder).resolve()
    base = batch_name_for(folder)
    out = [base]
    if folder.parent.name:
        out.append(batch_name_for(Path(f"{folder.parent.name}_{folder.name}")))
    out.append(f"{base[:MAX_BATCH_NAME - 9]}-{folder_key(folder)[:8]}")
    return list(dict.fromkeys(out))


def fingerprint(folder: Path) -> str:
    """``files:newest_mtime`` over the folder tree (symlinked dirs followed once, loops ignored)."""
    count, newest = 0, 0.0
    seen: set[tuple[int, int]] = set()
    stack = [Path(folder)]
    while stack:
        d = stack.pop()
        try:
            st = d.stat()
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            newest = max(newest, st.st_mtime)
            with os.scandir(d) as it:
                for e in it:
                    if e.name.startswith("."):
                        continue
                    try:
                        if e.is_dir(follow_symlinks=True):
                            stack.append(Path(e.path))
                        elif e.is_file(follow_symlinks=True):
                            count += 1
                            newest = max(newest, e.stat().st_mtime)
                    except OSError:
                        continue
        except OSError:
            continue
    return f"{count}:{newest:.3f}"


def discover_batches(inbox: Path) -> dict[str, tuple[Path, str]]:
    """folder name → (folder, fingerprint) for every visible sub-folder of the inbox (the batch name is chosen at
    registration: ``ingest.batch_for_folder``)."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        return {}
    out: dict[str, tuple[Path, str]] = {}
    for entry in sorted(inbox.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        out[entry.name] = (entry.resolve(), fingerprint(entry))
    return out
