"""Pipeline runs launched from the web: re-cluster (the organize job) and training.

Choice: ``serve`` executes them itself, one at a time, each in a fresh worker *process* (option b of the issue),
rather than queueing them for a ``dagster-daemon`` started beside it (option a). Why:

* The run is executed exactly as the CLI executes it (``face_pipeline.cli._run_job``: ``execute_in_process``
  recorded in the home's Dagster instance), so it appears in the Dagster UI of the same DAGSTER_HOME with its
  logs, asset materialisations and checks, and there is one launch code path, not two.
* No second long-lived process to start, supervise and stop (a daemon also needs a gRPC code server for the
  workspace); ``serve`` stays one process plus a short-lived child per run, which is what the issue's "one
  process" asks for. A child process frees the models' and clustering's memory when it ends, and a crash in a run
  cannot take the web app down.
* One at a time is what the embedded home needs anyway (SQLite and the Qdrant local folder); the queue is in
  memory, so runs queued but not started are lost when ``serve`` stops (each answer says so in its status).

The run id is chosen before the run starts (``execute_in_process(run_id=…)``) so the API can return it at once;
until the worker starts, ``GET /runs/{id}`` answers from this queue (``QUEUED``).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

from face_pipeline.core.errors import NotFound
from face_pipeline.settings import Settings

JOBS = {"organize": "organize_library", "train": "train_projection"}


@dataclass
class Launch:
    run_id: str
    kind: str  # organize | train
    run_config: dict
    actor: str
    status: str = "QUEUED"  # QUEUED → STARTING → (Dagster's status) | FAILURE
    queued_at: float = field(default_factory=time.time)
    error: str | None = None


def _plain(value):
    """Metadata values as JSON-ready data (text, numbers, lists and dicts pass; anything else as text)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def organize_run_config(person_threshold=None, unknown_method=None, unknown_min_size=None, unknown_threshold=None,
                        use_trained_model=False) -> dict:
    from face_pipeline.cli import (
        _organize_run_config,  # the CLI's own builder: `cluster` and the web agree
    )

    return _organize_run_config(person_threshold, unknown_method, unknown_min_size, unknown_threshold, use_trained_model)


def train_run_config(**overrides) -> dict:
    cfg = {k: v for k, v in overrides.items() if v is not None}
    return {"ops": {"projection_head": {"config": cfg}}}


class RunLauncher:
    """A FIFO of launches executed one at a time by a daemon thread, each in a child process."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._queue: queue.Queue[Launch] = queue.Queue()
        self._launches: dict[str, Launch] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._instance = None

    # -- launching ---------------------------------------------------------------------------------------------
    def submit(self, kind: str, run_config: dict, actor: str) -> Launch:
        if kind not in JOBS:
            raise ValueError(kind)
        launch = Launch(str(uuid.uuid4()), kind, run_config, actor)
        with self._lock:
            self._launches[launch.run_id] = launch
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="face-pipeline-runs", daemon=True)
                self._thread.start()
        self._queue.put(launch)
        return launch

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FACE_PIPELINE_HOME"] = str(self.settings.home_dir)
        if self.settings.database_url:
            env["DATABASE_URL"] = self.settings.database_url
        if self.settings.qdrant_url:
            env["QDRANT_URL"] = self.settings.qdrant_url
        env.setdefault("ORT_DISABLE_TELEMETRY", "1")
        env.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
        return env

    def _work(self) -> None:
        while True:
            launch = self._queue.get()
            launch.status = "STARTING"
            cmd = [sys.executable, "-m", "face_pipeline.web.run_worker", launch.kind, launch.run_id,
                   json.dumps(launch.run_config), launch.actor]
            try:
                proc = subprocess.run(cmd, env=self._env(), capture_output=True, text=True, timeout=24 * 3600)
                if proc.returncode != 0:
                    tail = (proc.stderr or proc.stdout or "").strip().splitlines()
                    launch.error = tail[-1] if tail else f"worker exited with {proc.returncode}"
                launch.status = "DONE" if proc.returncode == 0 else "FAILURE"
            except Exception as exc:  # never let the worker thread die: later launches still run
                launch.status, launch.error = "FAILURE", f"{type(exc).__name__}: {exc}"

    # -- reading -----------------------------------------------------------------------------------------------
    def instance(self):
        """The home's Dagster instance (the one the worker records runs in and the Dagster UI shows)."""
        if self._instance is None:
            import dagster as dg

            if os.environ.get("FACE_KEEP_DAGSTER_HOME") and os.environ.get("DAGSTER_HOME"):
                self._instance = dg.DagsterInstance.get()
            else:
                self._instance = dg.DagsterInstance.from_config(str(self.settings.dagster_home))
        return self._instance

    def _record(self, run_id: str) -> dict | None:
        rec = self.instance().get_run_record_by_id(run_id)
        if rec is None:
            return None
        run = rec.dagster_run
        return {
            "run_id": run.run_id, "job": run.job_name, "status": run.status.value,
            "start_time": rec.start_time, "end_time": rec.end_time, "tags": dict(run.tags),
        }

    def status(self, run_id: str) -> dict:
        launch = self._launches.get(run_id)
        rec = self._record(run_id)
        if rec is None and launch is None:
            raise NotFound(f"no run with id {run_id!r}")
        out = rec or {"run_id": run_id, "job": JOBS[launch.kind], "status": launch.status, "start_time": None,
                      "end_time": None, "tags": {}}
        if launch is not None:
            out["launched_by"] = launch.actor
            if launch.error and out["status"] not in ("SUCCESS",):
                out["error"] = launch.error
            if rec is None and launch.status == "DONE":
                out["status"] = "UNKNOWN"
        if out.get("job") == JOBS["train"] and rec is not None:
            out["training"] = self._training_outcome(run_id)
        out["dagster_url"] = f"{self.settings.web_dagster_ui_url.rstrip('/')}/runs/{run_id}"
        return out

    def _training_outcome(self, run_id: str) -> dict | None:
        """What training answered (trained / refused by the gate / not enough labels): the metadata of the
        projection_head asset's check in this run, as the CLI's ``train`` reads it."""
        from dagster import DagsterEventType

        records = self.instance().get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
        for rec in records:
            data = rec.event_log_entry.dagster_event.event_specific_data
            if data.asset_key.to_user_string() == "projection_head" and "status" in data.metadata:
                return {k: _plain(v.value) for k, v in data.metadata.items()}
        return None

    def latest(self) -> dict | None:
        """The newest run in the instance (any launcher: CLI, sensors, schedules, this app)."""
        runs = self.instance().get_runs(limit=1)
        if not runs:
            queued = [launch for launch in self._launches.values() if launch.status in ("QUEUED", "STARTING")]
            return self.status(queued[0].run_id) if queued else None
        return self.status(runs[0].run_id)

    def close(self) -> None:
        if self._instance is not None:
            self._instance.dispose()
            self._instance = None
