"""The Dagster UI really lists our assets, sensors and schedule: a real dagster-webserver on workspace.yaml,
asked through its GraphQL endpoint (what the UI itself does)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUERY = """{ assetNodes { assetKey { path } }
  repositoriesOrError { ... on RepositoryConnection { nodes { sensors { name } schedules { name cronSchedule } } } } }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)["data"]


def test_webserver_lists_assets_sensors_and_schedule(tmp_path):
    port = _free_port()
    env = {**os.environ, "FACE_PIPELINE_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    (tmp_path / "dagster_home").mkdir()
    (tmp_path / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    webserver = Path(sys.executable).with_name("dagster-webserver")
    # Own process group, SIGINT at its default: a background server must be killable (see stack notes).
    proc = subprocess.Popen(
        [str(webserver), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 120
        data = None
        while time.time() < deadline and proc.poll() is None:
            try:
                data = _graphql(port, QUERY)
                if data["assetNodes"]:
                    break
            except OSError:
                pass
            time.sleep(1)
        if data is None:
            pytest.fail(f"webserver did not answer: {proc.stderr.read().decode()[-2000:] if proc.poll() is not None else 'timeout'}")
        assets = {tuple(a["assetKey"]["path"]) for a in data["assetNodes"]}
        assert {("face_detections",), ("face_embeddings",), ("supervised_assignments",), ("unknown_clusters",),
                ("projection_head",), ("reembedded_faces",)} <= assets
        repo = data["repositoriesOrError"]["nodes"][0]
        assert {s["name"] for s in repo["sensors"]} == {"photo_inbox_sensor", "label_change_sensor", "organize_after_ingest", "dead_run_sensor"}
        assert [(s["name"], s["cronSchedule"]) for s in repo["schedules"]] == [("nightly_refresh", "0 2 * * *")]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
