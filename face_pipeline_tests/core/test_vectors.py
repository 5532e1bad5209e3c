"""The Qdrant face store in local mode (a real Qdrant folder in the test's home)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid

import numpy as np
import pytest

from face_pipeline.core.vectors import (
    PAYLOAD_FIELDS,
    FaceRecord,
    FaceVectorStore,
    VectorStoreBusy,
    open_vector_client,
    point_id,
)
from face_pipeline_tests.conftest import REPO_ROOT


def _vec(seed: int, dim: int = 512) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _rec(face_id: str, seed: int, batch: str = "b1", person: str | None = None, dim: int = 512) -> FaceRecord:
    return FaceRecord(face_id, _vec(seed, dim), {"image_id": face_id.split("_")[0], "batch": batch, "person_id": person,
                                                 "bbox": [0.0, 0.0, 10.0, 10.0], "det_score": 0.9, "quality_score": 0.5,
                                                 "person_confidence": None})


@pytest.fixture
def store(settings):
    with open_vector_client(settings) as client:
        yield FaceVectorStore(client, settings.qdrant_collection).ensure()


def test_point_ids_are_deterministic_uuids():
    a = point_id("0123456789abcdef_face0")
    assert a == point_id("0123456789abcdef_face0")
    assert uuid.UUID(a).version == 5
    assert a != point_id("0123456789abcdef_face1")


def test_reupsert_overwrites_instead_of_duplicating(store):
    store.upsert([_rec("img1_face0", 1), _rec("img1_face1", 2), _rec("img2_face0", 3)])
    assert store.count() == 3
    got = store.client.retrieve(store.collection, ids=[point_id("img1_face0")], with_payload=True)
    assert set(got[0].payload) == set(PAYLOAD_FIELDS)
    first_indexed = got[0].payload["indexed_at"]

    changed = FaceRecord("img1_face0", _vec(99), {**_rec("img1_face0", 1).payload, "person_id": "person_x"})
    store.upsert([changed, _rec("img2_face0", 3)])
    assert store.count() == 3
    vecs = store.vectors_for(["img1_face0", "img1_face1"])
    np.testing.assert_allclose(vecs["img1_face0"], _vec(99), atol=1e-6)  # overwritten ...
    np.testing.assert_allclose(vecs["img1_face1"], _vec(2), atol=1e-6)  # ... and the other one untouched
    payload = store.client.retrieve(store.collection, ids=[point_id("img1_face0")], with_payload=True)[0].payload
    assert payload["person_id"] == "person_x" and payload["face_id"] == "img1_face0"
    assert payload["indexed_at"] >= first_indexed


def test_delete_batch_removes_only_that_batch(store):
    store.upsert([_rec(f"a{i}_face0", i, batch="a") for i in range(4)] + [_rec(f"b{i}_face0", 10 + i, batch="b") for i in range(3)])
    assert store.count() == 7
    store.delete_batch("a")
    assert store.count() == 3
    assert sorted(r.payload["batch"] for r in store.iter_records(with_vectors=False)) == ["b"] * 3
    store.delete_batch("no-such-batch")  # nothing to delete is fine
    store.delete(["b0_face0"])
    assert sorted(r.face_id for r in store.iter_records(with_vectors=False)) == ["b1_face0", "b2_face0"]


def test_set_payloads_changes_only_the_named_fields(store):
    store.upsert([_rec(f"f{i}_face0", i) for i in range(5)])
    n = store.set_payloads({"f1_face0": {"person_id": "person_1", "person_confidence": 0.8},
                            "f3_face0": {"person_id": "person_3", "person_confidence": 0.6}})
    assert n == 2
    by_id = {r.face_id: r.payload for r in store.iter_records(with_vectors=False)}
    assert (by_id["f1_face0"]["person_id"], by_id["f1_face0"]["person_confidence"]) == ("person_1", 0.8)
    assert by_id["f3_face0"]["person_id"] == "person_3"
    assert by_id["f1_face0"]["batch"] == "b1" and by_id["f1_face0"]["bbox"] == [0.0, 0.0, 10.0, 10.0]  # rest kept
    assert all(by_id[f"f{i}_face0"]["person_id"] is None for i in (0, 2, 4))


def test_search_ranks_and_filters_by_person(store):
    query = _vec(1000)
    recs = []
    for i in range(6):  # six faces near the query: 0,2,4 are person_a; 1,3,5 person_b; 5 closest to the query
        away = _vec(3000 + i)
        away -= (away @ query) * query  # orthogonal direction: cosine to the query falls as its weight grows
        v = query + 0.1 * (6 - i) * away / np.linalg.norm(away)
        recs.append(FaceRecord(f"near{i}_face0", v, {"batch": "b1", "person_id": "person_a" if i % 2 == 0 else "person_b"}))
    recs += [_rec(f"far{i}_face0", 2000 + i, person="person_a") for i in range(10)]
    store.upsert(recs)

    hits = store.search(query, limit=3)
    assert [h[0] for h in hits] == ["near5_face0", "near4_face0", "near3_face0"]
    assert hits[0][1] > 0.9 and hits[0][1] >= hits[1][1] >= hits[2][1]

    a_hits = store.search(query, limit=3, person_id="person_a")
    assert [h[0] for h in a_hits] == ["near4_face0", "near2_face0", "near0_face0"]
    assert all(h[2]["person_id"] == "person_a" for h in store.search(query, limit=50, person_id="person_a"))
    assert len(store.search(query, limit=50, person_id="person_a")) == 13
    assert store.search(query, limit=5, person_id="person_nobody") == []


def test_alias_switch_is_atomic_and_returns_the_previous_collection(settings):
    with open_vector_client(settings) as client:
        proj = FaceVectorStore(client, "faces_proj", dim=8)
        assert not proj.exists()
        proj.create_collection("faces_proj_v1", 8)
        assert proj.switch_alias("faces_proj_v1") is None
        assert proj.exists() and proj.collection == "faces_proj_v1"
        proj.upsert([_rec("x_face0", 1, dim=8)])  # through the alias
        assert proj.count() == 1

        proj.create_collection("faces_proj_v2", 8)  # built beside the live one
        proj.upsert([_rec(f"y{i}_face0", i, dim=8) for i in range(3)], collection="faces_proj_v2")
        assert proj.count() == 1  # the alias still reads v1
        assert proj.switch_alias("faces_proj_v2") == "faces_proj_v1"
        assert proj.collection == "faces_proj_v2" and proj.count() == 3
        assert proj.collections_with_prefix("faces_proj_v") == ["faces_proj_v1", "faces_proj_v2"]
        proj.ensure()  # the alias exists: ensure must not create a plain "faces_proj" collection
        assert sorted(c.name for c in client.get_collections().collections) == ["faces_proj_v1", "faces_proj_v2"]


def test_clients_are_shared_within_a_process(settings):
    with open_vector_client(settings) as a, open_vector_client(settings) as b:
        assert a is b
        FaceVectorStore(a, "faces").ensure().upsert([_rec("k_face0", 1)])
    with open_vector_client(settings) as c:  # closed after the last user, reopened from disk
        assert c is not a
        assert FaceVectorStore(c, "faces").count() == 1


def test_local_storage_is_wal_and_survives_reopen(settings):
    recs = [_rec(f"p{i}_face0", i) for i in range(40)]
    with open_vector_client(settings) as client:
        store = FaceVectorStore(client, "faces").ensure()
        store.upsert(recs)
        store.delete(["p0_face0"])
    (db,) = settings.qdrant_path.glob("collection/faces/storage.sqlite")
    conn = sqlite3.connect(db)
    try:  # WAL: a point no longer waits for its own fsync (see vectors._fast_local_writes)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    with open_vector_client(settings) as client:
        store = FaceVectorStore(client, "faces")
        assert store.count() == 39
        got = store.vectors_for([r.face_id for r in recs[1:]])
        for r in recs[1:]:
            np.testing.assert_allclose(got[r.face_id], r.vector, atol=1e-6)


_HOLDER = """
import sys
from face_pipeline.core.vectors import FaceVectorStore, open_vector_client
from face_pipeline.settings import Settings
with open_vector_client(Settings(home=sys.argv[1])) as client:
    FaceVectorStore(client, "faces").ensure()
    print("holding", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def test_another_process_holding_the_folder_is_reported_as_busy(settings):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(settings.home_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline().strip()
        assert line == "holding", proc.stderr.read()
        with pytest.raises(VectorStoreBusy, match="in use by another process") as info:
            with open_vector_client(settings):
                pass
        assert str(settings.qdrant_path) in str(info.value)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "released"
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open_vector_client(settings) as client:  # free again once the other process is gone
        assert FaceVectorStore(client, "faces").count() == 0
