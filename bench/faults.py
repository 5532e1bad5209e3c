"""Fault-injection matrix: ``ingest`` and ``cluster`` killed with SIGKILL at every fault point, then re-run.

Run ``.venv/bin/python bench/faults.py`` (every point in ``face_pipeline.core.faults.POINTS``) or
``bench/faults.py embedding organize`` (some). Each point runs the CI test
``face_pipeline_tests/test_crash_recovery.py`` for that point in its own pytest process (with ``FACE_FAULTS=all``)
and the table says whether the library came back intact (no duplicate or lost face, manual label kept, SQL, the
embedding files and Qdrant agree, no run left STARTED, no pool slot held) and how long crash + recovery took.
CI runs the slice ``test_crash_recovery.CI_POINTS``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from face_pipeline.core.faults import POINTS  # noqa: E402


def main(points: list[str]) -> int:
    rows = []
    for point in points:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "face_pipeline_tests/test_crash_recovery.py"),
                               "-k", f"[{point}]"], env={**os.environ, "FACE_FAULTS": "all", "PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True, cwd=ROOT)
        last = (proc.stdout.strip().splitlines() or ["?"])[-1]
        rows.append((point, "intact" if proc.returncode == 0 else "FAILED", time.perf_counter() - t0, last))
        if proc.returncode != 0:
            print(proc.stdout[-3000:], file=sys.stderr)
    print(f"{'fault point':<18} {'result':<8} {'seconds':>8}  pytest")
    for point, result, seconds, last in rows:
        print(f"{point:<18} {result:<8} {seconds:8.1f}  {last}")
    return 0 if all(r[1] == "intact" for r in rows) else 1


if __name__ == "__main__":
    wanted = sys.argv[1:] or list(POINTS)
    unknown = set(wanted) - set(POINTS)
    if unknown:
        sys.exit(f"unknown fault point(s) {sorted(unknown)}; known: {', '.join(POINTS)}")
    sys.exit(main(wanted))
