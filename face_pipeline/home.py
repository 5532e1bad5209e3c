"""Preparing FACE_PIPELINE_HOME for the embedded default: folders, SQL schema, and a Dagster instance config.

The embedded instance runs one run at a time (queued run coordinator, ``max_concurrent_runs: 1``) because
SQLite and the Qdrant local folder must never be opened by two runs at once. Telemetry is off.
"""

from __future__ import annotations

import os
from pathlib import Path

from face_pipeline.core.db import upgrade
from face_pipeline.settings import Settings

EMBEDDED_DAGSTER_YAML = """\
# Written by face_pipeline for the embedded default (FACE_PIPELINE_HOME). Regenerated on every start.
telemetry:
  enabled: false
storage:
  sqlite:
    base_dir: {home}/storage
local_artifact_storage:
  module: dagster._core.storage.root
  class: LocalArtifactStorage
  config:
    base_dir: {home}
compute_logs:
  module: dagster._core.storage.local_compute_log_manager
  class: LocalComputeLogManager
  config:
    base_dir: {home}/compute_logs
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
concurrency:
  runs:
    max_concurrent_runs: 1
  pools:
    default_limit: 1
run_monitoring:
  # runs the daemon launched that never got going (their worker died before starting) are failed; runs whose
  # worker died later are found by their process (face_pipeline/runs.py, the dead_run_sensor and every command)
  enabled: true
  start_timeout_seconds: 300
  cancel_timeout_seconds: 180
  free_slots_after_run_end_seconds: 60
sensors:
  use_threads: false
schedules:
  use_threads: false
"""


_prepared: set[tuple[str, str]] = set()


def prepare_home(settings: Settings, *, set_dagster_home: bool = True) -> Path:
    """Create the home layout, migrate SQL to head and write the embedded Dagster config. Idempotent.

    Done once per process and library (home + database): sensors tick every few seconds and every command, run
    and resource asks for it; the Alembic upgrade alone costs ~0.3 s."""
    home = settings.home_dir
    key = (str(home), settings.sql_url)
    if key in _prepared:
        if set_dagster_home and not os.environ.get("FACE_KEEP_DAGSTER_HOME"):
            os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
        return home
    for sub in ("artifacts", "qdrant", "dagster_home", "inbox"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    dagster_home = settings.dagster_home
    (dagster_home / "dagster.yaml").write_text(EMBEDDED_DAGSTER_YAML.format(home=dagster_home.as_posix()))
    upgrade(settings.sql_url)
    _prepared.add(key)
    if set_dagster_home and not os.environ.get("FACE_KEEP_DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(dagster_home)
    return home
