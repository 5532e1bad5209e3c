"""A batch is its folder: same-named folders stay apart, names are validated before any write, and a photo that
moves between batch folders keeps its faces and labels (content identity wins). Real models, SQL, Qdrant."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import select

from face_pipeline.core import ingest, labels
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import FaceInstance, Photo, PhotoBatch
from face_pipeline.core.embedding_files import load_embeddings
from face_pipeline.core.errors import Conflict, InvalidInput
from face_pipeline.core.inbox import validate_batch_name
from face_pipeline.core.vectors import FaceVectorStore, open_vector_client
from face_pipeline_tests.conftest import copy_photos, lfw_people, run_ingest


def _faces(settings) -> dict[str, tuple[str, str | None, str | None]]:
    with session_scope(settings.sql_url) as s:
        return {f.face_id: (f.batch, f.person_id, f.assignment_source) for f in s.scalars(select(FaceInstance))}


def _points(settings) -> dict[str, str]:
    with open_vector_client(settings) as client:
        return {r.face_id: r.payload["batch"] for r in FaceVectorStore(client, settings.qdrant_collection).iter_records(with_vectors=False)}


def _ingest(settings, models, folder, requested=None) -> str:
    name = ingest.batch_for_folder(settings, folder, requested)
    run_ingest(settings, models, name)
    return name


@pytest.mark.parametrize("bad, why", [("a/b/c", "path separator"), ("..", "not a valid batch name"), (".hidden", "not a valid"),
                                      ("x" * 300, "at most 100"), ("", "empty"), ("semi;colon", "not a valid")])
def test_batch_names_are_validated(bad, why):
    with pytest.raises(InvalidInput, match=why):
        validate_batch_name(bad)


def test_a_valid_name_becomes_its_partition_key():
    assert validate_batch_name("summer 2024") == "summer_2024"
    assert validate_batch_name("Trip-2.b") == "Trip-2.b"


def test_two_folders_with_the_same_name_are_two_batches(settings, models, faces_dev, tmp_path):
    people = list(lfw_people(faces_dev, n=2, per_person=1).values())
    a, b = tmp_path / "photos" / "2023" / "trip", tmp_path / "photos" / "2024" / "trip"
    copy_photos(people[0], a)
    copy_photos(people[1], b)
    first = _ingest(settings, models, a)
    faces_a = set(_faces(settings))
    labels.label_face(settings, sorted(faces_a)[0], "Ann")
    second = _ingest(settings, models, b)
    assert (first, second) == ("trip", "2024_trip")
    faces = _faces(settings)
    assert faces_a < set(faces), "the second folder's ingest deleted the first folder's faces"
    assert faces[sorted(faces_a)[0]][2] == "manual"
    assert _ingest(settings, models, b) == "2024_trip"  # the same folder again: the same batch
    with session_scope(settings.sql_url) as s:
        assert {r.name: r.source_dir for r in s.scalars(select(PhotoBatch))} == {"trip": str(a.resolve()), "2024_trip": str(b.resolve())}
    # an explicit name already taken by another (existing) folder is refused before anything is written
    c = tmp_path / "elsewhere"
    c.mkdir()
    with pytest.raises(Conflict, match="already the folder"):
        ingest.batch_for_folder(settings, c, "trip")
    # and a folder already known under one name cannot be ingested again under another
    with pytest.raises(Conflict, match="already batch 'trip'"):
        ingest.batch_for_folder(settings, a, "other_name")


def test_a_moved_photo_keeps_its_faces_and_labels(settings, models, faces_dev, tmp_path):
    people = list(lfw_people(faces_dev, n=2, per_person=1).values())
    a, b = tmp_path / "a", tmp_path / "b"
    moved = copy_photos(people[0], a)[0]
    copy_photos(people[1], a)  # a photo that stays in folder a
    _ingest(settings, models, a)
    with session_scope(settings.sql_url) as s:
        moved_image = s.scalar(select(Photo.image_id).where(Photo.path == str(moved)))
    moved_faces = sorted(f for f in _faces(settings) if f.startswith(moved_image))
    labelled = labels.label_face(settings, moved_faces[0], "Mover").person_id

    b.mkdir()
    shutil.move(moved, b / moved.name)
    _ingest(settings, models, b)
    faces = _faces(settings)
    assert faces[moved_faces[0]] == ("b", labelled, "manual"), "the moved photo lost its label"
    with session_scope(settings.sql_url) as s:
        statuses = dict(s.execute(select(Photo.batch, Photo.status).where(Photo.image_id == moved_image)).all())
    assert statuses == {"b": "ok"}, "the moved photo is not a duplicate of a path that no longer exists"

    _ingest(settings, models, a)  # re-ingesting the old folder must not delete the moved face
    faces = _faces(settings)
    assert faces[moved_faces[0]] == ("b", labelled, "manual")
    ids, _ = load_embeddings(settings)
    assert len(ids) == len(set(ids)) == len(faces), "a face is listed twice in the embedding files"
    assert _points(settings)[moved_faces[0]] == "b"


def test_a_label_comes_back_when_the_old_folder_is_re_ingested_first(settings, models, faces_dev, tmp_path):
    people = list(lfw_people(faces_dev, n=2, per_person=1).values())
    a, b = tmp_path / "a", tmp_path / "b"
    moved = copy_photos(people[0], a)[0]
    copy_photos(people[1], a)
    _ingest(settings, models, a)
    face = sorted(_faces(settings))[0]
    image = face.rsplit("_face", 1)[0]
    with session_scope(settings.sql_url) as s:
        path = s.scalar(select(Photo.path).where(Photo.image_id == image))
    b.mkdir()
    shutil.move(path, b / "x.jpg")
    person = labels.label_face(settings, face, "Back").person_id
    _ingest(settings, models, a)  # the photo is gone from a: its faces go (with an event remembering the label)
    assert face not in _faces(settings)
    _ingest(settings, models, b)
    assert _faces(settings)[face] == ("b", person, "manual")
    del moved
