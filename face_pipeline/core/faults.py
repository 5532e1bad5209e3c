"""Fault injection for crash-recovery tests (a TEST HOOK, inert unless its environment variable is set).

``FACE_FAULT_POINT=<name>`` makes the process kill itself with SIGKILL the first time it reaches the named point,
exactly as a power cut or the OOM killer would: no ``finally`` blocks, no atexit, no Dagster failure event. The
points are placed where a crash leaves the most state half-written:

- ``detection``       after the first photo is detected, before anything is written to SQL;
- ``embedding``       after the first embedding batch, before SQL is updated;
- ``after_sql_commit`` after the embeddings are committed to SQL, before the embedding file and Qdrant;
- ``vector_write``    after the batch's old points are deleted from Qdrant, before the new ones are written;
- ``organize``        after supervised assignment is written, before unknown clustering.

The tests in ``face_pipeline_tests/test_crash_recovery.py`` (and ``bench/faults.py`` for the full matrix) use it.
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "FACE_FAULT_POINT"
POINTS = ("detection", "embedding", "after_sql_commit", "vector_write", "organize")


def fault_point(name: str) -> None:
    """SIGKILL this process if ``FACE_FAULT_POINT`` names this point (no-op otherwise)."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
