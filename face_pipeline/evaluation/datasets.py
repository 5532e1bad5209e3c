"""Labelled photo folders (``<Identity>/<photo>``) turned into embeddings once, then cached.

Benchmarks and tests need the same embeddings many times; detecting and embedding lfw_dev takes minutes on two
cores. The cache lives inside the repository's ignored ``.cache/`` folder (or ``FACE_BENCH_CACHE``), keyed by
the data set, the model files and the detector size, so nothing depends on the system temp folder and a change
of model never reuses stale vectors.

Every detected face is kept. The *labelled* face of a photo is its most central, large face (LFW's subject);
any other face is a background stranger, a person of its own whose identity is unknown.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}


def cache_dir() -> Path:
    return Path(os.environ.get("FACE_BENCH_CACHE") or (REPO / ".cache" / "embeddings"))


@dataclass
class LabelledFaces:
    """All faces of a labelled folder. Arrays are aligned by face row."""

    name: str
    X: np.ndarray  # (n, 512) float32, L2-normalised
    norms: np.ndarray  # raw embedding norm (quality signal)
    det_score: np.ndarray
    quality: np.ndarray
    identity: np.ndarray  # folder name of the photo (object array)
    photo: np.ndarray  # int photo index, the cannot-link group
    labelled: np.ndarray  # bool: this face is its photo's subject (the folder's person)
    bbox: np.ndarray  # (n, 4)
    photo_paths: list[str]

    def __len__(self) -> int:
        return len(self.X)

    @property
    def truth(self) -> np.ndarray:
        """Ground-truth person per face: the folder's identity for subjects, a unique stranger id otherwise."""
        t = self.identity.copy()
        for i in np.flatnonzero(~self.labelled):
            t[i] = f"__stranger_{i}"
        return t


def _subject(bboxes: np.ndarray, width: int, height: int) -> int:
    cx, cy, diag = width / 2, height / 2, max(width, height)
    fx = (bboxes[:, 0] + bboxes[:, 2]) / 2
    fy = (bboxes[:, 1] + bboxes[:, 3]) / 2
    cost = np.hypot(fx - cx, fy - cy) / diag - 0.5 * (bboxes[:, 2] - bboxes[:, 0]) / max(width, 1)
    return int(np.argmin(cost))


def list_photos(folder: Path) -> list[tuple[str, Path]]:
    out = []
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        for f in sorted(person.iterdir()):
            if f.suffix.lower() in PHOTO_SUFFIXES:
                out.append((person.name, f))
    return out


def _key(folder: Path, settings) -> str:
    from face_pipeline.core.models import model_paths

    det, rec = model_paths(settings)
    h = hashlib.sha256()
    for part in (str(folder.resolve()), det.name, str(det.stat().st_size), rec.name, str(rec.stat().st_size),
                 str(settings.det_size), str(settings.det_threshold), str(settings.min_face_size),
                 # how detector inputs are sized (fixed 640 or fitted to the photo): a new rule means new boxes
                 str(getattr(settings, "det_input", "")), str(getattr(settings, "det_max_side", "")),
                 str(getattr(settings, "det_tile_aspect", ""))):
        h.update(part.encode())
    return h.hexdigest()[:12]


def embed_folder(folder: Path, settings=None, progress: bool = True) -> LabelledFaces:
    """Detect, align and embed every face of a labelled folder with the product's own models and photo loader."""
    from face_pipeline.core.models import FaceModels, l2_normalize, quality_score
    from face_pipeline.core.photos import PhotoError, load_photo
    from face_pipeline.settings import Settings

    settings = settings or Settings(home=REPO / ".cache" / "unused_home")
    models = FaceModels(settings)
    photos = list_photos(folder)
    rows: dict[str, list] = {k: [] for k in ("emb", "det", "ident", "photo", "lab", "bbox")}
    paths: list[str] = []
    for pi, (ident, path) in enumerate(photos):
        paths.append(str(path.relative_to(folder)))
        try:
            decoded = load_photo(path, settings.max_image_pixels)
        except PhotoError:
            continue
        img = decoded.bgr if hasattr(decoded, "bgr") else decoded.image
        faces = models.detect(img)
        if not faces:
            continue
        crops = [models.align(img, f.landmarks) for f in faces]
        emb = models.embed(crops)
        boxes = np.array([f.bbox for f in faces], dtype=np.float32)
        subj = _subject(boxes, img.shape[1], img.shape[0])
        for j, f in enumerate(faces):
            rows["emb"].append(emb[j])
            rows["det"].append(f.det_score)
            rows["ident"].append(ident)
            rows["photo"].append(pi)
            rows["lab"].append(j == subj)
            rows["bbox"].append(boxes[j])
        if progress and pi % 500 == 0:
            print(f"  embedding {folder.name}: {pi}/{len(photos)} photos", flush=True)
    raw = np.asarray(rows["emb"], dtype=np.float32).reshape(-1, 512)
    norms = np.linalg.norm(raw, axis=1)
    det = np.asarray(rows["det"], dtype=np.float32)
    return LabelledFaces(
        name=folder.name, X=l2_normalize(raw), norms=norms, det_score=det,
        quality=np.array([quality_score(float(n), float(d)) for n, d in zip(norms, det)], dtype=np.float32),
        identity=np.asarray(rows["ident"], dtype=object), photo=np.asarray(rows["photo"], dtype=np.int64),
        labelled=np.asarray(rows["lab"], dtype=bool), bbox=np.asarray(rows["bbox"], dtype=np.float32).reshape(-1, 4),
        photo_paths=paths,
    )


def load_labelled(name_or_folder: str | Path, settings=None, progress: bool = True) -> LabelledFaces:
    """The embeddings of ``../shared/data/<name>`` (or any labelled folder), from the cache when present."""
    folder = Path(name_or_folder)
    if not folder.is_dir():
        folder = SHARED_DATA / str(name_or_folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no labelled folder {name_or_folder!r} (looked in {SHARED_DATA})")
    from face_pipeline.settings import Settings

    settings = settings or Settings(home=REPO / ".cache" / "unused_home")
    path = cache_dir() / f"{folder.name}_{_key(folder, settings)}.npz"
    if path.exists():
        z = np.load(path, allow_pickle=True)
        return LabelledFaces(name=folder.name, X=z["X"], norms=z["norms"], det_score=z["det_score"], quality=z["quality"],
                             identity=z["identity"], photo=z["photo"], labelled=z["labelled"], bbox=z["bbox"],
                             photo_paths=list(z["photo_paths"]))
    data = embed_folder(folder, settings, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, X=data.X, norms=data.norms, det_score=data.det_score, quality=data.quality, identity=data.identity,
             photo=data.photo, labelled=data.labelled, bbox=data.bbox, photo_paths=np.asarray(data.photo_paths, dtype=object))
    os.replace(tmp, path)
    return data


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or ["faces_dev", "lfw_dev"]:
        d = load_labelled(name)
        print(f"{name}: {len(d)} faces, {int(d.labelled.sum())} labelled, {len(set(d.identity[d.labelled]))} people")
