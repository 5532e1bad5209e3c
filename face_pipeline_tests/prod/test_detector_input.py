"""Detector input fitted to the photo: the sizing rule, tiling of extreme aspect ratios, and a real panorama
built from real face photos (the old fixed 640×640 input finds none of its faces)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from face_pipeline.core.models import INPUT_SIDES, FaceModels, fit_input_size, nms, tile_windows
from face_pipeline.core.photos import load_photo
from face_pipeline_tests.conftest import lfw_people


def test_small_photos_are_not_blown_up():
    assert fit_input_size(250, 250, 1024) == (256, 256)  # LFW: 256², not 640² (6.25× fewer pixels)
    assert fit_input_size(425, 425, 1024) == (448, 448)  # LFW on its padded canvas
    assert fit_input_size(112, 150, 1024) == (160, 128)  # (width, height)
    for h, w in [(250, 250), (333, 500), (1000, 700), (64, 64)]:
        iw, ih = fit_input_size(h, w, 1024)
        assert iw % 32 == 0 and ih % 32 == 0 and iw in INPUT_SIDES and ih in INPUT_SIDES
        assert iw >= w * 0.999 and ih >= h * 0.999  # holds the photo at full resolution ...
        assert iw / w < 1.35 and ih / h < 1.35 or min(iw, ih) == INPUT_SIDES[0]  # ... upscaled at most to the next step


def test_large_photos_keep_resolution_up_to_the_cap():
    assert fit_input_size(3000, 4000, 1024) == (1024, 768)  # 1.6× the long side the fixed 640 kept
    assert fit_input_size(4000, 3000, 1280) == (1024, 1280)  # 960 rounds up to the next ladder step
    assert fit_input_size(3000, 4000, 1000) == (992, 768)  # caps that are not on the ladder round down to 32


def test_tiles_cover_the_long_side_with_overlap():
    assert tile_windows(100, 250, 3.0) == [] and tile_windows(1000, 1000, 3.0) == []
    tiles = tile_windows(100, 20000, 3.0)
    assert tiles[0] == (0, 100, 0, 200) and tiles[-1][3] == 20000
    for (_, _, a0, a1), (_, _, b0, b1) in zip(tiles, tiles[1:]):
        assert b0 < a1 and a1 - b0 >= 100  # consecutive tiles overlap by the short side
    vertical = tile_windows(9000, 300, 3.0)
    assert vertical[0] == (0, 600, 0, 300) and vertical[-1][1] == 9000


def test_nms_keeps_the_best_of_overlapping_boxes():
    b = np.array([[0, 0, 10, 10, 0.9], [1, 1, 11, 11, 0.95], [50, 50, 60, 60, 0.5]], dtype=np.float32)
    assert sorted(nms(b, 0.4).tolist()) == [1, 2]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def fixed_models(models):
    return FaceModels(models.settings.model_copy(update={"det_input": "fixed"}))


def test_a_20000x100_panorama_yields_its_faces(models, fixed_models, faces_dev):
    people = lfw_people(faces_dev, 10, 1)
    strip = np.full((100, 20000, 3), 90, dtype=np.uint8)
    xs = []
    for i, paths in enumerate(people.values()):
        img = cv2.resize(load_photo(paths[0]).image, (100, 100), interpolation=cv2.INTER_AREA)
        x = i * 2000 + 700
        strip[:, x : x + 100] = img
        xs.append(x)
    assert fixed_models.detect(strip) == []  # the old rule: 20000 px squeezed into 640 leaves faces of 3 px
    faces = models.detect(strip)
    centres = [(f.bbox[0] + f.bbox[2]) / 2 for f in faces]
    # Each photo's subject (LFW: the central face) is found; LFW photos may also show a second face at the edge.
    for x in xs:
        assert any(x + 25 <= c <= x + 75 for c in centres), (x, centres)
    assert all(any(x <= c <= x + 100 for x in xs) for c in centres), centres  # nothing found on the grey between
    for i, a in enumerate(faces):  # tile overlaps do not duplicate a face
        assert all(_iou(a.bbox, b.bbox) < 0.3 for b in faces[i + 1 :])
    for f in faces:
        assert 0 <= f.bbox[1] < f.bbox[3] <= 100 and f.det_score >= 0.5


def test_lfw_photos_give_the_same_faces_at_both_rules(models, fixed_models, faces_dev):
    """Small slice of bench/detector_input.py: every face found at 640 is found again (IoU ≥ 0.5)."""
    for paths in list(lfw_people(faces_dev, 8, 2).values()):
        for p in paths:
            img = load_photo(p).image
            a, b = fixed_models.detect(img), models.detect(img)
            assert a and all(max(_iou(fa.bbox, fb.bbox) for fb in b) >= 0.5 for fa in a if b) and b, p.name
