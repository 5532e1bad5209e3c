"""Faces and photos a person can see: JPEG thumbnails of faces (cached on disk) and library photos by id.

Only photos registered in SQL are ever opened, by the path SQL holds for an image id: nothing from a request
becomes a path. Photos are decoded with :func:`face_pipeline.core.photos.load_photo` — the same decoder ingest
used — so the EXIF orientation is applied exactly as it was when the faces were detected and the stored boxes
fit the picture.

Thumbnails are cached under ``HOME/web/thumbs`` by a hash of (face id, box, size): a re-detected face with a new
box gets a new file, and the cache can be deleted at any time.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw
from sqlalchemy import select

from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import PHOTO_OK, FaceInstance, Photo
from face_pipeline.core.errors import LibraryNotReady, NotFound
from face_pipeline.core.photos import PhotoError, load_photo
from face_pipeline.settings import Settings

THUMB_MARGIN = 0.35  # of the box's longer side, on every side: hair and chin belong to a recognisable face
JPEG_QUALITY = 85
PHOTO_MAX_EDGE = 1600  # photos are served downscaled: enough for a screen, far less to send


@dataclass(frozen=True)
class FaceBox:
    face_id: str
    image_id: str
    box: tuple[float, float, float, float]


def _face_box(settings: Settings, face_id: str) -> FaceBox:
    with session_scope(settings.sql_url) as s:
        row = s.execute(select(FaceInstance.face_id, FaceInstance.image_id, FaceInstance.x1, FaceInstance.y1, FaceInstance.x2,
                               FaceInstance.y2).where(FaceInstance.face_id == face_id)).first()
    if row is None:
        raise NotFound(f"no face with id {face_id!r}")
    return FaceBox(row.face_id, row.image_id, (row.x1, row.y1, row.x2, row.y2))


def photo_path(settings: Settings, image_id: str) -> Path:
    """The file of a registered photo (first readable copy), or NotFound."""
    with session_scope(settings.sql_url) as s:
        paths = list(s.scalars(select(Photo.path).where(Photo.image_id == image_id, Photo.status == PHOTO_OK).order_by(Photo.id)))
    if not paths:
        raise NotFound(f"no photo with id {image_id!r}")
    for p in paths:
        if Path(p).is_file():
            return Path(p)
    raise NotFound(f"photo {image_id!r} is registered but its file is gone ({paths[0]})")


def _decode(settings: Settings, image_id: str) -> Image.Image:
    path = photo_path(settings, image_id)
    try:
        photo = load_photo(path, settings.max_image_pixels)
    except PhotoError as exc:
        raise LibraryNotReady(f"photo {image_id!r} cannot be read any more: {exc}") from exc
    return Image.fromarray(photo.image[:, :, ::-1])  # BGR → RGB


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def thumb_cache_path(settings: Settings, fb: FaceBox) -> Path:
    key = hashlib.sha1(f"{fb.face_id}|{fb.box}|{settings.web_thumb_size}".encode()).hexdigest()
    return settings.web_dir / "thumbs" / key[:2] / f"{key}.jpg"


def crop_face(img: Image.Image, box: tuple[float, float, float, float], size: int) -> Image.Image:
    """A square crop around the box with a margin, clipped to the photo, scaled to ``size``."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * (0.5 + THUMB_MARGIN)
    left, top = max(0, int(cx - half)), max(0, int(cy - half))
    right, bottom = min(img.width, int(cx + half + 0.5)), min(img.height, int(cy + half + 0.5))
    crop = img.crop((left, top, max(right, left + 1), max(bottom, top + 1)))
    crop.thumbnail((size, size), Image.Resampling.LANCZOS)
    return crop


def face_thumbnail(settings: Settings, face_id: str) -> Path:
    """Path of the cached JPEG thumbnail of a face, made on first use (written atomically: concurrent requests
    for one face may both render it, neither ever serves half a file)."""
    fb = _face_box(settings, face_id)
    path = thumb_cache_path(settings, fb)
    if path.is_file():
        return path
    data = _jpeg(crop_face(_decode(settings, fb.image_id), fb.box, settings.web_thumb_size))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def photo_faces(settings: Settings, image_id: str) -> list[dict]:
    with session_scope(settings.sql_url) as s:
        rows = s.execute(select(FaceInstance.face_id, FaceInstance.x1, FaceInstance.y1, FaceInstance.x2, FaceInstance.y2,
                                FaceInstance.person_id).where(FaceInstance.image_id == image_id).order_by(FaceInstance.face_index)).all()
    return [{"face_id": r.face_id, "bbox": [round(r.x1, 1), round(r.y1, 1), round(r.x2, 1), round(r.y2, 1)], "person_id": r.person_id}
            for r in rows]


def photo_jpeg(settings: Settings, image_id: str, boxes: bool = True) -> bytes:
    """The photo upright, at most PHOTO_MAX_EDGE on its longer side, with its face boxes drawn when asked."""
    img = _decode(settings, image_id)
    faces = photo_faces(settings, image_id) if boxes else []
    scale = min(1.0, PHOTO_MAX_EDGE / max(img.width, img.height))
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)
    if faces:
        draw = ImageDraw.Draw(img)
        width = max(2, round(max(img.width, img.height) / 400))
        for f in faces:
            x1, y1, x2, y2 = (v * scale for v in f["bbox"])
            draw.rectangle((x1, y1, x2, y2), outline=(40, 200, 90) if f["person_id"] else (240, 180, 0), width=width)
    return _jpeg(img)
