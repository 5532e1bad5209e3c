"""Submitting a job to the Dagster instance's run queue instead of running it in the foreground.

``face-pipeline ingest|cluster|train|reassign --queue`` call :func:`submit_job`: the run is created from the code
location the instance serves (a ``workspace.yaml`` beside the instance's ``dagster.yaml`` — the gRPC code server
in docker/ — or else this package's ``face_pipeline.definitions``) and handed to the instance's run
coordinator. With the queued coordinator (every instance this project writes or ships) the daemon starts it
when the run limits and pool slots allow; this process returns at once with the run id.

This is what ``dagster job launch`` does (same Dagster functions), without a second process.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

from face_pipeline.core.errors import InvalidInput

CODE_MODULE = "face_pipeline.definitions"
PARTITION_TAG = "dagster/partition"


def workspace_file() -> Path | None:
    """The instance's workspace.yaml (production: it points at the code server), if there is one."""
    home = os.environ.get("DAGSTER_HOME")
    path = Path(home) / "workspace.yaml" if home else None
    return path if path is not None and path.is_file() else None


def _workspace_opts():
    from dagster_shared.cli import WorkspaceOpts

    ws = workspace_file()
    return WorkspaceOpts(workspace=[str(ws)]) if ws else WorkspaceOpts(module_name=[CODE_MODULE])


def submit_job(job_name: str, *, partition_key: str | None = None, tags: Mapping[str, str] | None = None,
               run_config: Mapping[str, Any] | None = None, instance=None) -> str:
    """Queue one run of ``job_name`` on the instance (``DAGSTER_HOME``); return its run id.

    ``partition_key`` selects the partition of a partitioned asset job (the batch of ``ingest_batch``)."""
    import dagster as dg
    from dagster._cli.job import execute_launch_command

    all_tags = dict(tags or {})
    if partition_key is not None:
        all_tags[PARTITION_TAG] = partition_key
    run_id = str(uuid.uuid4())
    own = instance is None
    instance = instance or dg.DagsterInstance.get()
    try:
        try:
            run = execute_launch_command(
                instance=instance,
                workspace_opts=_workspace_opts(),
                config_json=json.dumps(dict(run_config)) if run_config else None,
                tags=json.dumps(all_tags) if all_tags else None,
                run_id=run_id,
                job_name=job_name,
            )
        except dg.DagsterInvalidConfigError as exc:
            raise InvalidInput(f"invalid settings for {job_name}: {exc}") from exc
    finally:
        if own:
            instance.dispose()
    return run.run_id


def run_status(run_id: str, instance=None) -> str:
    """The run's status name (QUEUED, STARTED, SUCCESS, FAILURE …)."""
    import dagster as dg

    own = instance is None
    instance = instance or dg.DagsterInstance.get()
    try:
        run = instance.get_run_by_id(run_id)
        return run.status.value if run else "UNKNOWN"
    finally:
        if own:
            instance.dispose()
