"""Dead runs are found by their process, failed, and their pool slots freed; a live holder is waited for, within
a bound, with a message that names it. Real Dagster instance, real processes (no mocks)."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id

from face_pipeline.core.errors import LibraryNotReady
from face_pipeline.defs.automation.sensors import dead_run_sensor
from face_pipeline.runs import QDRANT_POOL, pool_holders, record_run_worker, recover_dead_runs, wait_for_pool


def _started_run_holding_the_pool(instance: dg.DagsterInstance) -> str:
    run_id = make_new_run_id()
    instance.add_run(DagsterRun(job_name="ingest_batch", run_id=run_id, status=dg.DagsterRunStatus.STARTED))
    instance.event_log_storage.set_concurrency_slots(QDRANT_POOL, 1)
    claim = instance.event_log_storage.claim_concurrency_slot(QDRANT_POOL, run_id, "face_embeddings")
    assert claim.is_claimed
    return run_id


def _worker_that_dies(instance: dg.DagsterInstance, run_id: str) -> None:
    """Record the worker of ``run_id`` from a real child process, which then exits (as if killed)."""
    code = ("import dagster as dg, sys; from face_pipeline.runs import record_run_worker; "
            "i = dg.DagsterInstance.from_config(sys.argv[1]); record_run_worker(i, sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, instance.root_directory, run_id], check=True)


def test_the_sensor_fails_a_run_whose_process_is_gone_and_frees_its_slot(dagster_instance):
    run_id = _started_run_holding_the_pool(dagster_instance)
    _worker_that_dies(dagster_instance, run_id)
    assert pool_holders(dagster_instance)

    result = dead_run_sensor(dg.build_sensor_context(instance=dagster_instance))
    assert "recovered 1" in result.skip_message
    assert dagster_instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert not pool_holders(dagster_instance)
    wait_for_pool(dagster_instance, timeout_s=0)  # free now: returns at once
    assert recover_dead_runs(dagster_instance) == []  # nothing left to do: safe to repeat


def test_a_live_run_is_never_failed_and_a_wait_for_it_gives_up_naming_it(dagster_instance):
    run_id = _started_run_holding_the_pool(dagster_instance)
    record_run_worker(dagster_instance, run_id)  # this very process: alive
    assert recover_dead_runs(dagster_instance) == []
    said: list[str] = []
    with pytest.raises(LibraryNotReady, match=rf"gave up after 1s waiting for the face_library pool held by run {run_id[:8]}"):
        wait_for_pool(dagster_instance, timeout_s=1, say=said.append, poll_s=0.2)
    assert said and "ingest_batch" in said[0] and "STARTED" in said[0]
    assert dagster_instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED


def test_a_run_of_another_host_is_left_to_run_monitoring(dagster_instance):
    run_id = _started_run_holding_the_pool(dagster_instance)
    _worker_that_dies(dagster_instance, run_id)
    path = dagster_instance.root_directory + f"/run_workers/{run_id}.json"
    import json

    data = json.load(open(path))
    data["host"] = "some-kubernetes-pod"
    json.dump(data, open(path, "w"))
    assert recover_dead_runs(dagster_instance) == []
    assert dagster_instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
