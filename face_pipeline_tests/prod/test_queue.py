"""``--queue``: ingest, cluster, train and reassign submit their run to the instance's queue and print its id,
instead of running in the foreground (the real console script, the embedded home's real Dagster instance; no
daemon runs here, so the runs stay queued)."""

from __future__ import annotations

import re

import dagster as dg
from dagster import DagsterRunStatus

from face_pipeline_tests.conftest import copy_photos, lfw_people
from face_pipeline_tests.test_cli import _run

RUN_LINE = re.compile(r"queued run ([0-9a-f-]{36}) \(([a-z_]+)(?:, batch ([^)]+))?\)")


def test_queue_submits_runs_and_prints_their_ids(tmp_path, faces_dev, monkeypatch):
    home = tmp_path / "home"
    photos = tmp_path / "trip 2024"
    copy_photos([p for ps in lfw_people(faces_dev, 2, 1).values() for p in ps], photos)
    submitted = {}
    for args in (["ingest", str(photos), "--queue"], ["cluster", "--unknown-threshold", "0.5", "--queue"],
                 ["reassign", "--queue"], ["train", "--epochs", "3", "--queue"]):
        rc, out, err = _run(home, *args, cwd=tmp_path)
        assert rc == 0, err
        m = RUN_LINE.search(out)
        assert m, out
        submitted[args[0]] = m.groups()
    assert submitted["ingest"][1:] == ("ingest_batch", "trip_2024")
    assert [submitted[c][1] for c in ("cluster", "reassign", "train")] == ["organize_library", "organize_library", "train_projection"]

    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
    with dg.DagsterInstance.get() as instance:
        runs = {cmd: instance.get_run_by_id(run_id) for cmd, (run_id, _, _) in submitted.items()}
        assert all(r is not None and r.status == DagsterRunStatus.QUEUED for r in runs.values())
        assert runs["ingest"].tags["dagster/partition"] == "trip_2024"
        assert runs["cluster"].run_config["ops"]["unknown_clusters"]["config"]["unknown_threshold"] == 0.5
        assert runs["train"].run_config["ops"]["projection_head"]["config"]["epochs"] == 3
        # queued, not run: nothing was ingested in the foreground
        assert instance.get_runs(filters=dg.RunsFilter(statuses=[DagsterRunStatus.SUCCESS])) == []
