"""Qdrant names per library, payload indexes, quantization and null payloads — in local mode always, and on a
Qdrant server when ``QDRANT_URL`` points at a reachable one (otherwise those cases skip and say so)."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
from pydantic import ValidationError

from face_pipeline.core.vectors import CollectionNames, FaceRecord, FaceVectorStore, is_local, no_person_filter, open_vector_client, point_id
from face_pipeline.settings import Settings

SERVER_SKIP = "QDRANT_URL unset or its Qdrant server unreachable — Qdrant server-mode tests skipped (local mode ran)"


def _server_url() -> str | None:
    url = os.environ.get("QDRANT_URL")
    if not url:
        return None
    try:
        from qdrant_client import QdrantClient

        QdrantClient(url=url, api_key=os.environ.get("QDRANT_API_KEY"), timeout=3).get_collections()
        return url
    except Exception:
        return None


@pytest.fixture(params=["local", "server"])
def library_settings(request, tmp_path):
    """Settings of a fresh library ``t<random>`` in local mode (a temp folder) or on the server."""
    name = f"t{uuid.uuid4().hex[:8]}"
    if request.param == "server":
        url = _server_url()
        if url is None:
            print(SERVER_SKIP)
            pytest.skip(SERVER_SKIP)
        settings = Settings(home=tmp_path / "home", qdrant_url=url, library=name)
    else:
        settings = Settings(home=tmp_path / "home", library=name)
    yield settings
    with open_vector_client(settings) as client:  # a shared server keeps nothing of ours
        for c in client.get_collections().collections:
            if c.name.startswith(f"{name}_"):
                client.delete_collection(c.name)


def _vec(seed: int, dim: int = 512) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_every_name_derives_from_the_library():
    default, fam = CollectionNames(), CollectionNames.for_library("family")
    assert (default.faces, default.projected_alias, default.projected_version(3)) == ("faces", "faces_proj", "faces_proj_v3")
    assert (fam.faces, fam.projected_alias, fam.projected_version(3)) == ("family_faces", "family_faces_proj", "family_faces_proj_v3")
    assert Settings(library="family").qdrant_collection == "family_faces" and Settings().qdrant_collection == "faces"
    # Each library recognises only its own versions: re-embedding deletes superseded versions by this test.
    names = ["faces_proj_v1", "family_faces_proj_v2", "family_faces_proj_v10", "work_faces_proj_v1", "family_faces_proj",
             "family_faces_proj_v2_old", "family_faces"]
    assert [n for n in names if fam.is_projected_version(n)] == ["family_faces_proj_v2", "family_faces_proj_v10"]
    assert [n for n in names if default.is_projected_version(n)] == ["faces_proj_v1"]


@pytest.mark.parametrize("bad", ["Family", "a b", "-x", "x" * 49, "x/y"])
def test_library_names_that_cannot_be_collection_names_are_refused(bad):
    with pytest.raises(ValidationError):
        Settings(library=bad)


def test_library_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("FACE_LIBRARY", "agency")
    monkeypatch.setenv("FACE_QDRANT_QUANTIZATION", "int8")
    s = Settings()
    assert (s.library, s.qdrant_collection, s.qdrant_quantization) == ("agency", "agency_faces", "int8")


@pytest.mark.parametrize("quantization", ["none", "int8"])
def test_two_libraries_share_one_qdrant_without_touching_each_other(library_settings, quantization):
    other = library_settings.model_copy(update={"library": library_settings.library + "b"})
    with open_vector_client(library_settings) as client:
        mine = FaceVectorStore(client, library_settings.qdrant_collection, quantization=quantization).ensure()
        theirs = FaceVectorStore(client, other.qdrant_collection, quantization=quantization).ensure()
        try:
            mine.upsert([FaceRecord(f"m{i}_face0", _vec(i), {"image_id": f"m{i}", "batch": "b", "person_id": None}) for i in range(5)])
            theirs.upsert([FaceRecord(f"t{i}_face0", _vec(100 + i), {"image_id": f"t{i}", "batch": "b", "person_id": "p"}) for i in range(3)])
            mine.delete_batch("b")  # same batch name in both libraries: only mine goes
            assert (mine.count(), theirs.count()) == (0, 3)
            info = client.get_collection(mine.collection)
            params = info.config.params.vectors
            assert params.size == 512 and str(params.datatype).lower().endswith("float32")
            if not is_local(client):
                assert {"person_id", "image_id", "batch"} <= set(info.payload_schema)
                assert (info.config.quantization_config is not None) == (quantization == "int8")
        finally:
            client.delete_collection(theirs.collection)


def test_null_payloads_read_the_same_in_both_modes(library_settings):
    with open_vector_client(library_settings) as client:
        store = FaceVectorStore(client, library_settings.qdrant_collection).ensure()
        recs = [FaceRecord(f"f{i}_face0", _vec(i), {"image_id": f"f{i}", "batch": "b", "person_id": "person_a" if i < 2 else None,
                                                     "person_confidence": None}) for i in range(5)]
        store.upsert(recs)
        store.set_payloads({"f0_face0": {"person_id": None}, "f4_face0": {"person_id": "person_b"}})
        # An upsert keeps the null key; un-naming (set_payloads with None) deletes it — in both modes.
        assert "person_id" in store.client.retrieve(store.collection, ids=[point_id("f2_face0")], with_payload=True)[0].payload
        by_id = {r.face_id: r.payload for r in store.iter_records(with_vectors=False)}
        assert [by_id[f"f{i}_face0"].get("person_id") for i in range(5)] == [None, "person_a", None, None, "person_b"]
        assert store.count(no_person_filter()) == 3
        hits = store.search(_vec(0), limit=5, person_id="person_a")
        assert [h[0] for h in hits] == ["f1_face0"]  # a null person never matches a person filter
