"""Runs that died: find them by their process, fail them, free their pool slots; and bounded waits for a pool.

Why: a run executed on this host (the embedded default) that is killed with SIGKILL (power cut, OOM killer,
``kill -9``) never writes its failure event. Dagster then believes it is still STARTED, and the ``face_library``
pool slot its step claimed stays claimed — every later run waits for that slot forever. Dagster's own run
monitoring cannot tell for in-process runs whether the worker is alive, so each run records its worker here:
``DAGSTER_HOME/run_workers/<run_id>.json`` = {pid, host, process start time}. A run whose recorded process is gone
(or whose pid now belongs to another process) is dead: it is reported failed through the instance API and its
pool slots are freed. The CLI does this before every run, and the ``dead_run_sensor`` does it in the daemon.

Runs launched elsewhere (Docker, Kubernetes) record another host and are left to Dagster's run monitoring
(``run_monitoring`` in the production ``dagster.yaml``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dagster as dg
from dagster._core.storage.dagster_run import FINISHED_STATUSES, NOT_FINISHED_STATUSES

from face_pipeline.core.errors import LibraryNotReady

# issue 11: the pool of the library-wide steps and (local mode) of every Qdrant writer; named in defs/pools.py
from face_pipeline.defs.pools import LIBRARY_POOL as QDRANT_POOL
WORKERS_DIR = "run_workers"
_ALIVE_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/<pid>/stat), which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    now = _process_start(pid)
    return started is None or now is None or now == started


def _workers_dir(instance: dg.DagsterInstance) -> Path:
    return Path(instance.root_directory) / WORKERS_DIR


def record_run_worker(instance: dg.DagsterInstance, run_id: str) -> None:
    """Say that this process executes ``run_id`` (idempotent; the CLI and the run's resource both call it)."""
    folder = _workers_dir(instance)
    folder.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    data = {"pid": pid, "host": socket.gethostname(), "process_start": _process_start(pid), "recorded_at": time.time()}
    tmp = folder / f".{run_id}.{pid}.tmp"
    tmp.write_text(json.dumps(data))
    tmp.replace(folder / f"{run_id}.json")


def run_worker(instance: dg.DagsterInstance, run_id: str) -> dict | None:
    try:
        return json.loads((_workers_dir(instance) / f"{run_id}.json").read_text())
    except (OSError, ValueError):
        return None


def _forget_worker(instance: dg.DagsterInstance, run_id: str) -> None:
    (_workers_dir(instance) / f"{run_id}.json").unlink(missing_ok=True)


def worker_is_dead(worker: dict | None) -> bool:
    """True only when we KNOW the run's process is gone: recorded on this host and no longer running."""
    if not worker or worker.get("host") != socket.gethostname():
        return False
    return not _alive(int(worker["pid"]), worker.get("process_start"))


@dataclass(frozen=True)
class RecoveredRun:
    run_id: str
    job_name: str
    pid: int | None
    freed_slots: bool

    def describe(self) -> str:
        pid = f" (process {self.pid} is gone)" if self.pid else ""
        return f"run {self.run_id[:8]} of {self.job_name}{pid}: marked failed" + (f"; its {QDRANT_POOL} pool slot freed" if self.freed_slots else "")


def recover_dead_runs(instance: dg.DagsterInstance) -> list[RecoveredRun]:
    """Fail every unfinished run whose worker process on this host is gone, and free the pool slots held by
    runs that are dead or already finished. Safe to call any time, from any process."""
    recovered: list[RecoveredRun] = []
    storage = instance.event_log_storage
    holders = set(storage.get_concurrency_run_ids())
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_ALIVE_STATUSES)):
        worker = run_worker(instance, run.run_id)
        if not worker_is_dead(worker):
            continue
        instance.report_run_failed(
            run, message=f"face_pipeline: the process running this run (pid {worker['pid']} on {worker['host']}) is gone "
            "(killed or crashed); marked failed so later runs are not blocked.")
        storage.free_concurrency_slots_for_run(run.run_id)
        _forget_worker(instance, run.run_id)
        recovered.append(RecoveredRun(run.run_id, run.job_name, int(worker["pid"]), run.run_id in holders))
    # slots left behind by runs that finished (or vanished) without freeing them
    done = {r.run_id for r in recovered}
    for run_id in holders - done:
        run = instance.get_run_by_id(run_id)
        if run is None or run.status in FINISHED_STATUSES:
            storage.free_concurrency_slots_for_run(run_id)
            recovered.append(RecoveredRun(run_id, run.job_name if run else "?", None, True))
    return recovered


def pool_holders(instance: dg.DagsterInstance, pool: str = QDRANT_POOL) -> list[tuple[str, str]]:
    """(run_id, description) of the runs holding a slot of ``pool`` right now."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    out = []
    for run_id in sorted(info.active_run_ids):
        run = instance.get_run_by_id(run_id)
        worker = run_worker(instance, run_id) or {}
        where = f", pid {worker['pid']} on {worker['host']}" if worker else ""
        out.append((run_id, f"run {run_id[:8]} of {run.job_name if run else '?'} ({run.status.value if run else 'unknown'}{where})"))
    return out


def wait_for_pool(instance: dg.DagsterInstance, *, timeout_s: float, pool: str = QDRANT_POOL,
                  say: Callable[[str], None] | None = None, poll_s: float = 1.0) -> None:
    """Before a run: recover dead runs, then wait (at most ``timeout_s``) until no other run holds ``pool``.
    Says once what it waits for; raises LibraryNotReady naming the holder when the wait gives up."""
    deadline = time.monotonic() + timeout_s
    announced = None
    while True:
        recover_dead_runs(instance)
        holders = pool_holders(instance, pool)
        if not holders:
            return
        what = "; ".join(d for _, d in holders)
        if time.monotonic() >= deadline:
            raise LibraryNotReady(
                f"gave up after {timeout_s:.0f}s waiting for the {pool} pool held by {what}; if that run is stuck, "
                f"cancel it in the Dagster UI (or `dagster run delete`), or raise FACE_RUN_WAIT_SECONDS")
        if say and what != announced:
            say(f"waiting for the {pool} pool, held by {what} (up to {timeout_s:.0f}s)")
            announced = what
        time.sleep(poll_s)


def is_unfinished(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    return run is not None and run.status in NOT_FINISHED_STATUSES
