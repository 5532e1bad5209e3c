"""core.ingest without Dagster: real photos → real models → SQL (SQLite) + Qdrant local mode + embedding files."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from face_pipeline.core import ingest
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import FaceAssignmentEvent, FaceInstance, Person, Photo, PhotoBatch
from face_pipeline.core.embedding_files import load_embeddings
from face_pipeline.core.samples import sample_photo_paths
from face_pipeline.core.vectors import PAYLOAD_FIELDS, FaceVectorStore, open_vector_client
from face_pipeline_tests.conftest import copy_photos, lfw_people, run_ingest

PAYLOAD_KEYS = {"face_id", "image_id", "bbox", "person_id", "person_confidence", "det_score", "quality_score", "indexed_at", "batch"}


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def _bundled(*names: str) -> list[Path]:
    found = {p.name: p for p in sample_photo_paths()}
    missing = [n for n in names if n not in found]
    if missing:
        pytest.skip(f"bundled sample photos missing: {missing}")
    return [found[n] for n in names]


@pytest.fixture
def small_batch(tmp_path, faces_dev) -> Path:
    """6 faces_dev photos of 3 people (2 each) + t1.jpg (6 faces) + the tight Tom Hanks crop (1 face)."""
    people = lfw_people(faces_dev, n=3, per_person=2)
    folder = tmp_path / "photos" / "small"
    copy_photos([p for ps in people.values() for p in ps], folder)
    copy_photos(_bundled("t1.jpg", "Tom_Hanks_54745.png"), folder, prefix_person=False)
    return folder


def _sql(settings, batch: str | None = None):
    with session_scope(settings.sql_url) as s:
        q_ph, q_f = select(Photo), select(FaceInstance)
        if batch:
            q_ph, q_f = q_ph.where(Photo.batch == batch), q_f.where(FaceInstance.batch == batch)
        return {p.rel_path: p for p in s.scalars(q_ph)}, {f.face_id: f for f in s.scalars(q_f)}


def _points(settings) -> dict[str, tuple[np.ndarray, dict]]:
    with open_vector_client(settings) as client:
        store = FaceVectorStore(client, settings.qdrant_collection)
        return {r.face_id: (r.vector, r.payload) for r in store.iter_records(with_vectors=True)}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------------------
# the happy path
# --------------------------------------------------------------------------------------------------------------


def test_ingest_small_batch_writes_sql_qdrant_and_embedding_files(settings, models, small_batch):
    det, emb = run_ingest(settings, models, "small", small_batch)
    files = sorted(p.name for p in small_batch.iterdir())
    assert (det.photos, det.ok, det.failed, det.duplicates, det.no_faces) == (8, 8, 0, 0, 0)
    assert det.photos_per_s > 0 and emb.faces == det.faces and emb.model == "w600k_mbf"

    photos, faces = _sql(settings, "small")
    assert sorted(photos) == files
    assert photos["t1.jpg"].faces == 6 and photos["Tom_Hanks_54745.png"].faces == 1
    assert all(p.status == "ok" and p.faces >= 1 for p in photos.values())
    assert (photos["Tom_Hanks_54745.png"].width, photos["Tom_Hanks_54745.png"].height) == (112, 112)
    assert sum(p.faces for p in photos.values()) == len(faces) == det.faces

    # ids: image_id from the content hash, face ids {image_id}_face{n}, n = 0..k-1 per photo
    for rel, p in photos.items():
        assert p.content_hash == _sha(small_batch / rel) and p.image_id == p.content_hash[:16]
        own = sorted((f for f in faces.values() if f.image_id == p.image_id), key=lambda f: f.face_index)
        assert [f.face_id for f in own] == [f"{p.image_id}_face{n}" for n in range(p.faces)]
        assert [f.x1 for f in own] == sorted(f.x1 for f in own)  # numbered left to right
    assert all(f.embedded and f.embedding_model == "w600k_mbf" and 0 <= f.quality_score <= 1 for f in faces.values())

    with session_scope(settings.sql_url) as s:
        b = s.get(PhotoBatch, "small")
        assert (b.status, b.photos, b.faces, b.failures) == ("embedded", 8, len(faces), 0)

    # Qdrant: one point per SQL face, payload mirrored from SQL with exactly the documented fields
    points = _points(settings)
    assert sorted(points) == sorted(faces)
    assert set(PAYLOAD_FIELDS) == PAYLOAD_KEYS
    for fid, (vec, payload) in points.items():
        f = faces[fid]
        assert set(payload) == PAYLOAD_KEYS, fid
        assert payload["image_id"] == f.image_id and payload["batch"] == "small"
        assert payload["bbox"] == [round(f.x1, 1), round(f.y1, 1), round(f.x2, 1), round(f.y2, 1)]
        assert payload["det_score"] == round(f.det_score, 4) and payload["quality_score"] == f.quality_score
        assert payload["person_id"] is None and payload["person_confidence"] is None and payload["indexed_at"]
        assert vec.shape == (512,) and abs(np.linalg.norm(vec) - 1) < 1e-3

    # the embedding files hold the same vectors as Qdrant
    ids, X = load_embeddings(settings)
    assert ids == sorted(faces)
    assert X.shape == (len(faces), 512) and X.dtype == np.float32
    np.testing.assert_allclose(X, np.stack([points[f][0] for f in ids]), atol=1e-5)

    # and the vectors mean something: the two photos of each faces_dev person are each other's best match
    by_person: dict[str, list[np.ndarray]] = {}
    for rel, p in photos.items():
        if p.rel_path.endswith(".jpg") and "_lfw_" in rel:
            main = max((f for f in faces.values() if f.image_id == p.image_id), key=lambda f: (f.x2 - f.x1) * (f.y2 - f.y1))
            by_person.setdefault(rel.split("_lfw_")[0], []).append(points[main.face_id][0])
    assert len(by_person) == 3
    for name, (a, b2) in by_person.items():
        others = [v for n, vs in by_person.items() if n != name for v in vs]
        assert float(a @ b2) > max(float(a @ o) for o in others), name


def test_rerun_is_idempotent_and_keeps_manual_labels(settings, models, small_batch):
    run_ingest(settings, models, "small", small_batch)
    photos1, faces1 = _sql(settings)
    label_face = f"{photos1['t1.jpg'].image_id}_face2"
    with session_scope(settings.sql_url) as s:
        s.add(Person(person_id="person_kim", name="Kim"))
        s.flush()
        f = s.get(FaceInstance, label_face)
        f.person_id, f.assignment_source, f.person_confidence = "person_kim", "manual", 1.0

    det, _ = run_ingest(settings, models, "small")
    photos2, faces2 = _sql(settings)
    assert sorted(faces2) == sorted(faces1) and det.faces_removed == 0
    assert {r: (p.image_id, p.faces, p.status) for r, p in photos2.items()} == {r: (p.image_id, p.faces, p.status) for r, p in photos1.items()}
    with session_scope(settings.sql_url) as s:
        assert s.scalar(select(func.count()).select_from(Photo)) == 8
        assert s.scalar(select(func.count()).select_from(FaceInstance)) == len(faces1)
    assert (faces2[label_face].person_id, faces2[label_face].assignment_source) == ("person_kim", "manual")
    points = _points(settings)
    assert sorted(points) == sorted(faces1)  # same points, none added
    assert points[label_face][1]["person_id"] == "person_kim" and points[label_face][1]["person_confidence"] == 1.0
    assert sum(p[1]["person_id"] is not None for p in points.values()) == 1
    assert len(load_embeddings(settings)[0]) == len(faces1)


def test_photo_removed_from_folder_loses_its_faces_on_rerun(settings, models, small_batch):
    run_ingest(settings, models, "small", small_batch)
    photos1, faces1 = _sql(settings)
    gone_id = photos1["t1.jpg"].image_id
    gone = sorted(f for f in faces1 if f.startswith(gone_id))
    assert len(gone) == 6
    with session_scope(settings.sql_url) as s:  # a labelled face that disappears leaves an audit trail
        s.add(Person(person_id="person_t", name="T"))
        s.flush()
        s.get(FaceInstance, gone[0]).person_id = "person_t"

    (small_batch / "t1.jpg").unlink()
    det, emb = run_ingest(settings, models, "small")
    assert det.faces_removed == 6 and det.photos == 7
    photos2, faces2 = _sql(settings)
    assert "t1.jpg" not in photos2 and sorted(faces2) == sorted(set(faces1) - set(gone))
    points = _points(settings)
    assert sorted(points) == sorted(faces2) and not any(f.startswith(gone_id) for f in points)
    assert load_embeddings(settings)[0] == sorted(faces2)
    with session_scope(settings.sql_url) as s:
        events = s.scalars(select(FaceAssignmentEvent)).all()
        assert [(e.action, e.face_id, e.from_person) for e in events] == [("face_removed", gone[0], "person_t")]
        assert s.get(PhotoBatch, "small").faces == len(faces2)


def test_same_photo_in_a_second_batch_is_a_duplicate_not_embedded_twice(settings, models, tmp_path, faces_dev):
    people = lfw_people(faces_dev, n=3, per_person=1)
    first, second, third = [ps[0] for ps in people.values()]
    b1 = tmp_path / "b1"
    copy_photos([first, second], b1)
    run_ingest(settings, models, "b1", b1)
    _, faces_b1 = _sql(settings, "b1")

    b2 = tmp_path / "b2"
    (b2 / "renamed").mkdir(parents=True)
    shutil.copyfile(first, b2 / "renamed" / "copy_of_first.jpg")  # same bytes, other name and folder
    copy_photos([third], b2)
    shutil.copyfile(third, b2 / "zz_third_again.jpg")  # a duplicate inside the batch itself
    det, emb = run_ingest(settings, models, "b2", b2)

    photos2, faces_b2 = _sql(settings, "b2")
    dup = photos2["renamed/copy_of_first.jpg"]
    assert dup.status == "duplicate" and dup.faces == 0
    assert dup.reason == f"same content as b1/{first.parent.name}_{first.name}"
    third_row = photos2[f"{third.parent.name}_{third.name}"]
    again = photos2["zz_third_again.jpg"]
    assert third_row.status == "ok" and again.status == "duplicate"
    assert again.reason == f"same content as b2/{third_row.rel_path}"
    assert det.duplicates == 2 and det.ok == 1
    assert all(f.image_id == third_row.image_id for f in faces_b2.values()) and len(faces_b2) == third_row.faces
    points = _points(settings)
    assert sorted(points) == sorted(set(faces_b1) | set(faces_b2))  # the copy added no point
    assert {p["batch"] for fid, (_, p) in points.items() if fid.startswith(dup.image_id)} == {"b1"}
    assert emb.faces == len(faces_b2)


# --------------------------------------------------------------------------------------------------------------
# every bad input at once
# --------------------------------------------------------------------------------------------------------------


def _bilevel_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` × ``height`` black pixels: ~0.5 MB on disk, 900 M pixels decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\0" * (1 + (width + 7) // 8)
    rows_per_block = 1000
    comp = zlib.compressobj(1)
    parts = [comp.compress(row * rows_per_block) for _ in range(height // rows_per_block)]
    parts += [comp.compress(row * (height % rows_per_block)), comp.flush()]
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


@contextmanager
def _file_permissions_enforced():
    """Make this thread obey file modes, as an ordinary user would.

    Not root: nothing to do. Root: clear CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the *effective* set of
    the calling thread (they stay *permitted*, so they are restored afterwards). Root then only has the file
    owner's rights, so a ``chmod 000`` file is really unreadable — no fake, the kernel refuses the read.
    Yields None when that is impossible, with the reason.
    """
    if os.geteuid() != 0:
        yield None
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "capget") or not hasattr(libc, "capset"):
        yield "running as root and libc has no capget/capset to drop CAP_DAC_OVERRIDE"
        return
    hdr, data = _CapHeader(0x20080522, 0), (_CapData * 2)()  # _LINUX_CAPABILITY_VERSION_3, this thread
    if libc.capget(ctypes.byref(hdr), data) != 0:
        yield f"running as root and capget failed: {os.strerror(ctypes.get_errno())}"
        return
    saved = data[0].effective
    data[0].effective = saved & ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH))
    if libc.capset(ctypes.byref(hdr), data) != 0:
        yield f"running as root and capset failed: {os.strerror(ctypes.get_errno())}"
        return
    try:
        yield None
    finally:
        hdr, data2 = _CapHeader(0x20080522, 0), (_CapData * 2)()
        libc.capget(ctypes.byref(hdr), data2)
        data2[0].effective = saved
        if libc.capset(ctypes.byref(hdr), data2) != 0:  # pragma: no cover - would break later tests loudly
            raise OSError(ctypes.get_errno(), "could not restore capabilities")


def test_batch_with_every_bad_input_completes(settings, models, tmp_path, faces_dev):
    people = lfw_people(faces_dev, n=8, per_person=1)
    src = [ps[0] for ps in people.values()]
    root = tmp_path / "messy"
    wedding = root / "2021" / "07" / "wedding"
    wedding.mkdir(parents=True)
    (root / "2022" / "scans").mkdir(parents=True)

    def rgb(i: int) -> Image.Image:
        return Image.open(src[i]).convert("RGB")

    shutil.copyfile(src[0], wedding / "good.jpg")
    rgb(1).convert("L").save(wedding / "grey.jpg", quality=92)
    rgb(2).convert("CMYK").save(root / "2021" / "07" / "cmyk.jpg", quality=92)
    grey16 = (np.asarray(rgb(3).convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(grey16).save(root / "2022" / "scans" / "scan16.png")
    rgba = rgb(4).convert("RGBA")
    alpha = np.full(rgba.size[::-1], 255, np.uint8)
    alpha[:20, :] = 0  # a transparent band at the top
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(root / "2022" / "rgba.png")
    frames = [rgb(5), Image.fromarray(np.random.default_rng(0).integers(0, 256, (250, 250, 3), np.uint8))]
    frames[0].save(root / "2022" / "anim.gif", save_all=True, append_images=frames[1:], duration=200, loop=0)
    (root / "zero.jpg").write_bytes(b"")
    data = src[6].read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "text.jpg").write_text("this is not a photo\n" * 20)
    (root / "bomb.png").write_bytes(_bilevel_png(30000, 30000))
    locked = root / "locked.jpg"
    shutil.copyfile(src[7], locked)
    locked.chmod(0)
    (root / "notes.txt").write_text("shopping list")
    (root / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\0" * 64)
    (root / "2021" / "07" / "loop").symlink_to(root, target_is_directory=True)  # a link back up: a loop

    # sanity of the inputs themselves
    assert Image.open(root / "2021" / "07" / "cmyk.jpg").mode == "CMYK"
    assert Image.open(root / "2022" / "scans" / "scan16.png").mode.startswith("I;16")
    assert Image.open(root / "2022" / "anim.gif").n_frames == 2
    assert struct.unpack(">II", (root / "bomb.png").read_bytes()[16:24]) == (30000, 30000)
    assert (root / "bomb.png").stat().st_size < 2_000_000

    ingest.register_batch(settings, "messy", root)
    with _file_permissions_enforced() as why_not:
        locked_is_unreadable = False
        if why_not is None:
            try:
                locked.read_bytes()
            except PermissionError:
                locked_is_unreadable = True
        if not locked_is_unreadable:
            locked.unlink()  # cannot make it unreadable here: leave it out, check the rest, skip at the end
        det = ingest.detect_batch(settings, "messy", models)
    with open_vector_client(settings) as client:
        emb = ingest.embed_batch(settings, "messy", models, FaceVectorStore(client, settings.qdrant_collection))

    photos, faces = _sql(settings, "messy")
    status = {rel: (p.status, p.reason) for rel, p in photos.items()}
    converted = {
        "2021/07/wedding/good.jpg": None,
        "2021/07/wedding/grey.jpg": "greyscale converted",
        "2021/07/cmyk.jpg": "cmyk converted",
        "2022/scans/scan16.png": "16-bit scaled",
        "2022/rgba.png": "alpha composited on white",
        "2022/anim.gif": "animated: first frame",
    }
    for rel, note in converted.items():
        st, reason = status[rel]
        assert st == "ok", (rel, st, reason)  # a real face in every one of them, found after conversion
        assert (reason is None) if note is None else (note in reason), (rel, reason)
        assert photos[rel].faces >= 1
    expected_failures = {
        "zero.jpg": "empty file",
        "truncated.jpg": "truncated image",
        "text.jpg": "not an image",
        "bomb.png": "decompression bomb: 900000000 px > limit 120000000",
    }
    if locked_is_unreadable:
        expected_failures["locked.jpg"] = "permission denied"
    for rel, reason in expected_failures.items():
        assert status[rel] == ("failed", reason), rel
        assert (photos[rel].image_id is None) == (rel == "locked.jpg"), rel  # only the unreadable one has no hash
    assert set(status) == set(converted) | set(expected_failures)  # nothing else listed (not the loop, not .txt/.mp4)
    assert det.skipped == {"not a photo": 2, "symlink loop": 1}
    assert (det.photos, det.ok, det.failed, det.no_faces) == (len(status), 6, len(expected_failures), 0)
    assert sorted(det.failures) == sorted(expected_failures.items())
    assert emb.faces == len(faces) == sum(p.faces for p in photos.values())
    assert len(_points(settings)) == len(faces)
    with session_scope(settings.sql_url) as s:
        b = s.get(PhotoBatch, "messy")
        assert (b.status, b.failures) == ("embedded", len(expected_failures))
    locked.unlink(missing_ok=True)
    if not locked_is_unreadable:
        pytest.skip(f"every other bad input passed; the unreadable-file case was not checked: {why_not}")
