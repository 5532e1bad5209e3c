"""The photo inbox: each sub-folder of FACE_PHOTOS_INBOX is one batch.

A batch's fingerprint (number of files and newest modification time) lets the sensor notice both new folders
and photos added to a folder it already ingested, without reading any photo.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def batch_name_for(folder: Path) -> str:
    """A partition-key-safe name for a folder (Dagster partition keys must not hold odd characters)."""
    return _SAFE.sub("_", Path(folder).name).strip("_") or "batch"


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
    """batch name → (folder, fingerprint) for every visible sub-folder of the inbox."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        return {}
    out: dict[str, tuple[Path, str]] = {}
    for entry in sorted(inbox.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        out[batch_name_for(entry)] = (entry.resolve(), fingerprint(entry))
    return out
