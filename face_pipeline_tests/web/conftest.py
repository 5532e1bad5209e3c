"""A real library for the web tests, built once per session with the real models (core ingest and clustering, the
assets' own code): the bundled sample photos (batch ``samples``, what ``make run`` ingests) plus four LFW photos of
each of three faces_dev people (batch ``family``) and one of them re-saved with its pixels rotated and an EXIF
orientation tag (the thumbnail must come out upright). Each test gets a private copy of the home, on SQLite or on
a fresh PostgreSQL database (rows copied from the SQLite template) when one is reachable.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select

from face_pipeline.core.db import get_engine, session_scope, upgrade
from face_pipeline.core.db.schema import Base, FaceInstance, Photo
from face_pipeline.core.samples import copy_sample_photos
from face_pipeline.home import prepare_home
from face_pipeline.settings import Settings
from face_pipeline_tests.conftest import (
    _clear_face_env,
    copy_photos,
    lfw_people,
    run_ingest,
)

PEOPLE, IN_LIBRARY = 3, 4
ROTATED = "rotated_exif6.jpg"


@dataclass
class WebLibrary:
    home: Path
    photos: Path
    faces: dict[str, list[str]]  # person → face ids (the photo's centre face) in the library
    outside: dict[str, Path]  # person → a photo of them NOT in the library (find/search)
    rotated_face: str  # the face of the EXIF-rotated photo
    rotated_path: Path


_TEMPLATE: dict[str, WebLibrary] = {}


def _centre_face(settings: Settings, path: Path) -> str:
    with session_scope(settings.sql_url) as s:
        photo = s.scalars(select(Photo).where(Photo.path == str(path))).one()
        faces = list(s.scalars(select(FaceInstance).where(FaceInstance.image_id == photo.image_id)))
    assert faces, f"no face found in {path}"
    cx, cy = photo.width / 2, photo.height / 2
    return min(faces, key=lambda f: ((f.x1 + f.x2) / 2 - cx) ** 2 + ((f.y1 + f.y2) / 2 - cy) ** 2).face_id


@pytest.fixture(scope="session")
def web_library(tmp_path_factory, faces_dev, models) -> WebLibrary:
    if "lib" in _TEMPLATE:
        return _TEMPLATE["lib"]
    from face_pipeline.core.organize import cluster_unknown

    root = tmp_path_factory.mktemp("web_library")
    people = lfw_people(faces_dev, n=PEOPLE, per_person=IN_LIBRARY + 1)
    family = root / "photos" / "family"
    copied = {name: copy_photos(paths[:IN_LIBRARY], family) for name, paths in people.items()}
    # An upright photo stored sideways: pixels turned 90° clockwise, EXIF orientation 6 says "turn them back".
    first = next(iter(people))
    src = Image.open(copied[first][0])
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: turn 90° clockwise to view; the stored pixels are the upright image turned CCW
    src.transpose(Image.Transpose.ROTATE_90).save(family / ROTATED, "JPEG", quality=95, exif=exif.tobytes())
    samples = copy_sample_photos(root / "photos" / "samples")
    settings = Settings(home=root / "home")
    with pytest.MonkeyPatch.context() as mp:
        _clear_face_env(mp)
        prepare_home(settings, set_dagster_home=False)
        run_ingest(settings, models, "samples", samples)
        run_ingest(settings, models, "family", family)
        cluster_unknown(settings)
    faces = {name: [_centre_face(settings, p) for p in paths] for name, paths in copied.items()}
    lib = WebLibrary(settings.home_dir, root / "photos", faces, {n: ps[IN_LIBRARY] for n, ps in people.items()},
                     _centre_face(settings, family / ROTATED), family / ROTATED)
    get_engine(settings.sql_url).dispose()
    _TEMPLATE["lib"] = lib
    return lib


def copy_home(lib: WebLibrary, dest: Path) -> Path:
    home = dest / "home"
    shutil.copytree(lib.home, home, ignore=shutil.ignore_patterns("dagster_home", "web"))
    return home


def copy_rows(src_url: str, dst_url: str) -> None:
    """Every row of every table, parents first: the same library on another SQL backend."""
    upgrade(dst_url)
    src, dst = get_engine(src_url), get_engine(dst_url)
    with src.connect() as a, dst.begin() as b:
        for table in Base.metadata.sorted_tables:
            rows = [dict(r._mapping) for r in a.execute(table.select())]
            if rows:
                b.execute(table.insert(), rows)
        if dst.dialect.name == "postgresql":  # inserted explicit ids: move the sequences past them
            for table in Base.metadata.sorted_tables:
                for col in table.primary_key.columns:
                    if col.autoincrement is True or (col.type.python_type is int and col.autoincrement == "auto" and len(table.primary_key.columns) == 1):
                        b.exec_driver_sql(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', '{col.name}'), "
                            f"COALESCE((SELECT MAX({col.name}) FROM {table.name}), 0) + 1, false)")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def web_settings(web_library, backend, tmp_path, monkeypatch, request) -> Settings:
    """A private copy of the library on the chosen backend; env cleared so nothing else leaks in."""
    _clear_face_env(monkeypatch)
    home = copy_home(web_library, tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
    overrides = {}
    if backend == "postgresql":
        create = request.getfixturevalue("pg_database")
        _, url = create()
        copy_rows(Settings(home=home).sql_url, url)
        overrides["database_url"] = url
    settings = Settings(home=home, **overrides)
    prepare_home(settings, set_dagster_home=False)
    return settings
