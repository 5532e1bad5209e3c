"""What a label command costs as the user runs it: the whole ``face-pipeline`` process, from another folder, on a
fresh home (no Makefile environment), median of several runs.

Target (architecture issue): a label command ≤ 0.5 s on 2 cores. Before this work a ``label-face`` took 1.5–2.5 s
on a quiet machine (4.3 s CPU measured on a loaded one): the command imported qdrant-client, scipy and Alembic
and opened the Qdrant folder to push one payload. Now label commands write SQL only (payloads follow at the next
pipeline run), Alembic is skipped when the database is at head, and scipy is imported on first use.

Usage: .venv/bin/python bench/label_command.py [--runs 7]
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = Path(sys.executable).with_name("face-pipeline")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACE_", "DAGSTER_"))}
    env.update(FACE_PIPELINE_HOME=str(home), ORT_DISABLE_TELEMETRY="1", DAGSTER_DISABLE_TELEMETRY="1")
    return env


def timed(args: list[str], env: dict, cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one whole command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([str(CLI), *args], env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"face-pipeline {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fp-label-bench-"))
    home = work / "home"
    env = _env(home)
    samples = subprocess.run([str(CLI), "samples"], env=env, cwd=work, capture_output=True, text=True, check=True).stdout.strip()
    print(f"fresh home {home}; ingesting the bundled samples once …", flush=True)
    timed(["ingest", samples, "--batch", "samples"], env, work)
    timed(["export", "--out", str(work / "faces.csv")], env, work)
    faces = [r["face_id"] for r in csv.DictReader(open(work / "faces.csv"))]

    rows = []
    for label, make_args in (
        ("--help", lambda i: ["--help"]),
        ("label-face", lambda i: ["label-face", faces[i % len(faces)], f"Person {i % 3}"]),
        ("persons", lambda i: ["persons"]),
        ("reject", lambda i: ["reject", faces[(i + 7) % len(faces)], "Person 0"]),
    ):
        walls, cpus = zip(*(timed(make_args(i), env, work) for i in range(args.runs)))
        rows.append((label, statistics.median(walls), statistics.median(cpus)))
    print(f"\n{'command':<14}{'median wall s':>15}{'median CPU s':>14}{'target':>9}")
    for label, wall, cpu in rows:
        target = "0.5" if label in ("label-face", "reject") else ""
        print(f"{label:<14}{wall:>15.3f}{cpu:>14.3f}{target:>9}")
    print(f"\n(load average now: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; wall time is noise on a loaded box, CPU time less so)")


if __name__ == "__main__":
    main()
