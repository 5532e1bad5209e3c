"""The doctor finds and repairs a deleted vector store, a deleted / truncated embedding file, and never touches a
label. Real photos, real models, real SQL and Qdrant local mode."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from sqlalchemy import select

from face_pipeline.core import doctor, labels
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import FaceInstance
from face_pipeline.core.embedding_files import embeddings_path, load_embeddings
from face_pipeline.core.errors import LibraryNotReady
from face_pipeline.core.vectors import FaceVectorStore, open_vector_client
from face_pipeline_tests.conftest import copy_photos, lfw_people, run_ingest


@pytest.fixture
def lib(settings, models, faces_dev, tmp_path):
    people = lfw_people(faces_dev, n=2, per_person=2)
    copy_photos([p for ps in people.values() for p in ps], tmp_path / "b1")
    run_ingest(settings, models, "b1", tmp_path / "b1")
    face = sorted(load_embeddings(settings)[0])[0]
    labels.label_face(settings, face, "Kept Label")
    return {"labels": _labels(settings), "vectors": dict(zip(*load_embeddings(settings)))}


def _labels(settings):
    with session_scope(settings.sql_url) as s:
        return {f.face_id: (f.person_id, f.assignment_source, f.cluster_id) for f in s.scalars(select(FaceInstance))}


def _check(settings, repair=False, models=None):
    with open_vector_client(settings) as client:
        store = FaceVectorStore(client, settings.qdrant_collection)
        if repair:
            return doctor.repair(settings, store, lambda: models)
        return doctor.diagnose(settings, store)


def _assert_same_library(settings, lib, atol=1e-5):
    assert _labels(settings) == lib["labels"], "repair touched a label"
    ids, X = load_embeddings(settings)
    assert ids == sorted(lib["vectors"])
    np.testing.assert_allclose(X, np.stack([lib["vectors"][f] for f in ids]), atol=atol)
    with open_vector_client(settings) as client:
        stored = FaceVectorStore(client, settings.qdrant_collection).vectors_for(ids)
    np.testing.assert_allclose(np.stack([stored[f] for f in ids]), X, atol=atol)


def test_a_healthy_library(settings, lib):
    report = _check(settings)
    assert report.healthy, report.summary()
    assert report.sql_embedded == report.file_faces == report.store_points == len(lib["vectors"]) >= 4
    assert report.vectors_compared == len(lib["vectors"])


def test_a_deleted_vector_store_is_found_refused_and_rebuilt(settings, models, lib):
    shutil.rmtree(settings.qdrant_path)
    report = _check(settings)
    assert [p.kind for p in report.problems] == [doctor.STORE_MISSING]
    assert f"{len(lib['vectors'])} embedded faces" in report.problems[0].message
    with open_vector_client(settings) as client, pytest.raises(LibraryNotReady, match="doctor --repair"):
        doctor.require_ready(settings, FaceVectorStore(client, settings.qdrant_collection))
    repaired = _check(settings, repair=True, models=models)
    assert repaired.healthy and any("vector store rebuilt" in r for r in repaired.repaired)
    _assert_same_library(settings, lib)


def test_a_deleted_embedding_file_is_found_refused_and_rebuilt(settings, models, lib):
    embeddings_path(settings, "b1").unlink()
    report = _check(settings)
    assert [p.kind for p in report.problems] == [doctor.FILE_MISSING] and "batch b1" in report.problems[0].message
    with pytest.raises(LibraryNotReady, match="embedding file .* is missing"):
        doctor.require_ready(settings)  # what cluster / find refuse with
    repaired = _check(settings, repair=True, models=models)
    assert repaired.healthy, repaired.summary()
    assert "from the vector store" in repaired.repaired[0]
    _assert_same_library(settings, lib)


def test_with_both_copies_and_the_crops_gone_the_photos_rebuild_them(settings, models, lib):
    embeddings_path(settings, "b1").unlink()
    (settings.artifacts_dir / "batches" / "b1" / "crops.npy").unlink()
    shutil.rmtree(settings.qdrant_path)
    report = _check(settings)
    assert {p.kind for p in report.problems} == {doctor.FILE_MISSING, doctor.STORE_MISSING}
    repaired = _check(settings, repair=True, models=models)
    assert repaired.healthy, repaired.summary()
    assert "photos" in repaired.repaired[0]
    _assert_same_library(settings, lib, atol=2e-3)  # re-decoded and re-aligned: the same vectors up to float noise


def test_a_truncated_file_is_named(settings, lib):
    path = embeddings_path(settings, "b1")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(LibraryNotReady, match=f"embedding file {path} is unreadable"):
        load_embeddings(settings)
    report = _check(settings)
    assert [p.kind for p in report.problems] == [doctor.FILE_UNREADABLE] and str(path) in report.problems[0].message
