"""The photo inbox sensor, evaluated against a real Dagster instance and a real inbox folder."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import select

from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import PhotoBatch
from face_pipeline.core.samples import sample_photo_paths
from face_pipeline.defs.ingest.partitions import photo_batches
from face_pipeline.defs.resources import FacePipelineResource
from face_pipeline.defs.automation.sensors import photo_inbox_sensor
from face_pipeline.settings import Settings


@pytest.fixture
def inbox(tmp_path, home, monkeypatch) -> Path:
    photos = [p for p in sample_photo_paths() if p.suffix == ".jpg"]
    if len(photos) < 3:
        pytest.skip("bundled sample photos missing")
    inbox = tmp_path / "inbox"
    for folder, files in {"2024 Summer trip": photos[:2], "party-2024": photos[2:3]}.items():
        (inbox / folder).mkdir(parents=True)
        for p in files:
            shutil.copyfile(p, inbox / folder / p.name)
    (inbox / ".hidden_album").mkdir()  # ignored: hidden
    (inbox / "loose_photo.jpg").write_bytes(photos[0].read_bytes())  # ignored: not a folder
    monkeypatch.setenv("FACE_PHOTOS_INBOX", str(inbox))
    return inbox


def _evaluate(instance, home: Path, cursor: str | None = None):
    from face_pipeline.definitions import defs  # the real code location: run requests resolve to its job

    # instance_ref, as the code server passes it: run requests are then validated against the instance's
    # dynamic partitions (plus the ones the tick itself adds), as in production
    ref = instance.get_ref() if instance.is_persistent else None
    with dg.build_sensor_context(instance=None if ref else instance, instance_ref=ref, cursor=cursor, definitions=defs,
                                 resources={"face_pipeline": FacePipelineResource(home=str(home))}) as ctx:
        return photo_inbox_sensor.evaluate_tick(ctx)


def _batches(home: Path) -> dict[str, str]:
    with session_scope(Settings(home=home).sql_url) as s:
        return {b.name: b.source_dir for b in s.scalars(select(PhotoBatch))}


def test_inbox_sensor_requests_new_and_changed_folders(home, inbox, dagster_instance):
    assert Settings(home=home).inbox_dir == inbox.resolve()  # FACE_PHOTOS_INBOX is honoured
    instance = dagster_instance
    # first tick: both folders are new
    tick = _evaluate(instance, home)
    assert sorted(r.partition_key for r in tick.run_requests) == ["2024_Summer_trip", "party-2024"]
    assert all(r.job_name in (None, "ingest_batch") for r in tick.run_requests)
    assert len({r.run_key for r in tick.run_requests}) == 2
    assert all(r.tags["dagster/partition"] == r.partition_key for r in tick.run_requests)  # resolved by Dagster
    (add,) = tick.dynamic_partitions_requests
    assert isinstance(add, dg.AddDynamicPartitionsRequest)
    assert add.partitions_def_name == photo_batches.name
    assert sorted(add.partition_keys) == ["2024_Summer_trip", "party-2024"]
    assert _batches(home) == {"2024_Summer_trip": str((inbox / "2024 Summer trip").resolve()),
                              "party-2024": str((inbox / "party-2024").resolve())}
    summer, party = str((inbox / "2024 Summer trip").resolve()), str((inbox / "party-2024").resolve())
    assert set(json.loads(tick.cursor)) == {summer, party}  # the cursor is per folder: a batch IS its folder
    instance.add_dynamic_partitions(photo_batches.name, list(add.partition_keys))  # what the daemon does

    # second tick with the cursor: nothing changed
    again = _evaluate(instance, home, tick.cursor)
    assert not again.run_requests and not again.dynamic_partitions_requests
    assert again.skip_message and "no new or changed folders" in again.skip_message
    assert again.cursor == tick.cursor

    # a photo added to one folder: one run for that batch only, no new partition
    target = inbox / "party-2024" / "new.jpg"
    shutil.copyfile(next(p for p in sample_photo_paths() if p.name == "t1.jpg"), target)
    os.utime(target, (time.time() + 5, time.time() + 5))
    changed = _evaluate(instance, home, again.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["party-2024"]
    assert changed.run_requests[0].run_key not in {r.run_key for r in tick.run_requests}
    assert not changed.dynamic_partitions_requests
    assert json.loads(changed.cursor)[summer] == json.loads(tick.cursor)[summer]
    assert json.loads(changed.cursor)[party] != json.loads(tick.cursor)[party]

    # a third, new folder arrives later: a run and a partition for it alone
    (inbox / "later").mkdir()
    shutil.copyfile(target, inbox / "later" / "x.jpg")
    later = _evaluate(instance, home, changed.cursor)
    assert [r.partition_key for r in later.run_requests] == ["later"]
    assert [list(r.partition_keys) for r in later.dynamic_partitions_requests] == [["later"]]
    assert set(_batches(home)) == {"2024_Summer_trip", "party-2024", "later"}


def test_inbox_sensor_skips_a_missing_inbox(home, tmp_path, monkeypatch):
    monkeypatch.setenv("FACE_PHOTOS_INBOX", str(tmp_path / "no_inbox_here"))
    tick = _evaluate(dg.DagsterInstance.ephemeral(), home)
    assert not tick.run_requests and "no new or changed folders" in tick.skip_message
