"""Finding photos in a batch folder and decoding them into BGR arrays, refusing bad files with a reason.

Real photo folders are messy: nested ``year/month/event`` trees, symlinked albums, macOS ``._`` resource forks,
NAS thumbnail folders, half-copied JPEGs, 16-bit scans, CMYK exports, transparent PNGs, animated GIFs and the
occasional hostile file. Everything downstream (detection, embedding, the database) wants one thing: a
``(H, W, 3)`` uint8 BGR array the right way up, or a short reason why there is none. So this module:

* scans by extension only (cheap, predictable) and leaves content checks to :func:`load_photo`;
* never lets an exception other than :class:`PhotoError` escape :func:`load_photo`, so one bad file costs one
  skipped photo, not a failed batch;
* checks the pixel count from the header *before* decoding, so a tiny file declaring 30000x30000 pixels is
  refused without allocating gigabytes;
* never touches Pillow's process-wide switches (``Image.MAX_IMAGE_PIXELS``,
  ``ImageFile.LOAD_TRUNCATED_IMAGES``): other code in the process may rely on them, and our own
  ``max_pixels`` check is the one that decides here.

No Dagster here: this is plain Python that the assets, the CLI and the tests share.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import struct
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "PHOTO_EXTENSIONS",
    "DecodedPhoto",
    "PhotoError",
    "ScanResult",
    "content_hash",
    "load_photo",
    "scan_photos",
]

#: Same default as ``Settings.max_image_pixels``: above any consumer camera (a 100 MP medium-format frame is
#: ~102 M), far below what would exhaust memory once decoded to RGB.
DEFAULT_MAX_PIXELS = 120_000_000

#: Extensions we pick up when scanning. Only formats this Pillow build decodes: no ``.heic`` (that needs the
#: ``pillow-heif`` plugin, which is not installed), no RAW formats.
PHOTO_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)

# Formats Pillow may identify a file as. Pillow sniffs content, not names, so without this list a file named
# ``x.jpg`` could be opened by any plugin - EPS, for instance, shells out to Ghostscript. We only accept the
# formats behind PHOTO_EXTENSIONS (JPEG also covers MPO, the multi-picture JPEG many cameras write).
_PIL_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")

# Folders that hold generated or deleted files rather than the user's photos. Synology's ``@eaDir`` is the
# important one: it holds thumbnails of every photo, which would otherwise be detected as extra, smaller
# copies of the same faces (with a different content hash, so deduplication would not catch them).
_SYSTEM_DIR_NAMES = frozenset({"@eaDir", "__MACOSX", "#recycle", "$RECYCLE.BIN", "System Volume Information"})

_HASH_CHUNK = 1 << 20
_MAX_MESSAGE = 160
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+)")


class PhotoError(Exception):
    """A file that cannot be used as a photo.

    ``reason`` is short and stable enough to group and count (``"empty file"``, ``"truncated image"``,
    ``"not an image"``, ``"permission denied"``, ``"not found"``, ``"not a file"``, ``"not a regular file"``,
    ``"out of memory"``, ``"unsupported mode: X"``) or a stable prefix followed by detail
    (``"decompression bomb: 900000000 px > limit 120000000"``, ``"corrupt image: ..."``,
    ``"io error: ..."``, ``"decode failed: ..."``), so callers can store it next to the skipped file and
    users can read it.
    """

    def __init__(self, reason: str, path: Path | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(reason)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path is not None else self.reason


# --------------------------------------------------------------------------------------------------------------
# Scanning
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ScanResult:
    """What a scan found: the photos to process and, for the run report, why everything else was left out.

    ``skipped`` counts by reason: ``"not a photo"`` (other extensions, e.g. ``.txt``/``.mp4``), ``"hidden"``
    (dot files and folders, counted once per folder, not per file inside), ``"system folder"``,
    ``"symlink loop"``, ``"already scanned"`` (a second way into a folder already walked), ``"duplicate"``
    (a second path to a photo already listed), ``"outside batch"``, ``"broken symlink"``,
    ``"not a regular file"``, ``"unreadable folder"``, ``"unreadable"``.
    """

    photos: list[Path] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def scan_photos(folder: Path) -> ScanResult:
    """List every photo under ``folder`` (recursively), by extension, case-insensitively.

    * Symlinked folders and files are followed, so an album linked into a batch is processed, but only when
      they resolve *inside* the batch folder: a link to ``~`` or ``/`` must not turn one batch into a scan of
      the whole disk. Links leading out are counted as ``"outside batch"``. (The batch folder itself may be a
      symlink; its target is what counts as "inside".)
    * Each real folder is walked once (tracked by device and inode), so a link to a parent cannot loop.
    * Each real file is listed once, whichever paths lead to it.
    * Returned paths are absolute and sorted, and start with ``folder`` as given (made absolute, not
      resolved), so ``p.relative_to(folder.absolute())`` always works; symlinks inside the batch are resolved.
    * Hidden entries (name starts with ``.``) are skipped: that covers ``.DS_Store``, ``.Trash`` and the
      ``._IMG_0001.jpg`` AppleDouble files macOS leaves on non-Mac drives, which carry a photo extension but
      are not images.

    Raises ``FileNotFoundError``/``NotADirectoryError``/``PermissionError`` when ``folder`` itself is missing,
    not a folder or not listable: that is a problem with the batch, not with a photo in it.
    """
    folder = Path(folder)
    root_shown = folder.absolute()
    root_real = os.path.realpath(folder)
    if not os.path.exists(root_real):
        raise FileNotFoundError(errno.ENOENT, "batch folder not found", str(folder))
    if not os.path.isdir(root_real):
        raise NotADirectoryError(errno.ENOTDIR, "batch folder is not a folder", str(folder))

    skipped: Counter[str] = Counter()
    found: set[str] = set()
    root_stat = os.stat(root_real)
    visited: set[tuple[int, int]] = {(root_stat.st_dev, root_stat.st_ino)}
    pending = [root_real]

    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            if current == root_real:
                raise
            skipped["unreadable folder"] += 1
            continue

        for entry in entries:
            name = entry.name
            if name.startswith("."):
                skipped["hidden"] += 1
                continue
            target = entry.path  # `current` is a real path, so this is real unless the entry is a link
            try:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if not _is_within(target, root_real):
                        skipped["outside batch"] += 1
                        continue
                st = os.stat(target)
            except FileNotFoundError:
                skipped["broken symlink"] += 1
                continue
            except OSError as exc:
                skipped["symlink loop" if exc.errno == errno.ELOOP else "unreadable"] += 1
                continue

            if stat.S_ISDIR(st.st_mode):
                if name in _SYSTEM_DIR_NAMES:
                    skipped["system folder"] += 1
                    continue
                key = (st.st_dev, st.st_ino)
                if key in visited:
                    # A link to this folder or one of its ancestors would recurse forever; anything else is
                    # just a second way into a folder we walk (or walked) anyway.
                    skipped["symlink loop" if _is_within(current, target) else "already scanned"] += 1
                    continue
                visited.add(key)
                pending.append(target)
                continue

            if os.path.splitext(name)[1].lower() not in PHOTO_EXTENSIONS:
                skipped["not a photo"] += 1
            elif not stat.S_ISREG(st.st_mode):
                skipped["not a regular file"] += 1  # a FIFO or device named x.jpg would hang or stream forever
            elif target in found:
                skipped["duplicate"] += 1
            else:
                found.add(target)

    photos = sorted(root_shown / os.path.relpath(p, root_real) for p in found)
    return ScanResult(photos=photos, skipped=dict(sorted(skipped.items())))


def _is_within(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or below it (both real, absolute paths)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


# --------------------------------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------------------------------


def content_hash(path: Path) -> str:
    """SHA-256 (hex) of the file's bytes, read in chunks so a 200 MB TIFF never sits in memory at once.

    Hashing content rather than path or mtime is what lets a re-imported or renamed photo be recognised as
    already processed. Raises :class:`PhotoError` (``"permission denied"``, ``"not found"``, ...) like
    :func:`load_photo`, so callers need to catch one exception type for both. An empty file hashes normally.
    """
    path = Path(path)
    try:
        with _open_regular(path, allow_empty=True) as f:
            digest = hashlib.sha256()
            while chunk := f.read(_HASH_CHUNK):
                digest.update(chunk)
            return digest.hexdigest()
    except PhotoError as exc:
        exc.path = path
        raise
    except Exception as exc:
        raise PhotoError(_reason_for(exc), path) from exc


# --------------------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------------------


@dataclass
class DecodedPhoto:
    """A photo ready for OpenCV/insightface.

    ``image`` is ``(height, width, 3)``, uint8, BGR, C-contiguous, already turned the way the camera's EXIF
    orientation says it should be displayed; ``width``/``height`` describe that upright image (so face boxes
    found on it are in the coordinates a viewer shows). ``notes`` records every lossy or non-obvious step taken
    (``"greyscale converted"``, ``"cmyk converted"``, ``"16-bit scaled"``, ``"alpha dropped"``,
    ``"alpha composited on white"``, ``"animated: first frame"``, ``"multi-frame: first frame"`` (multi-page
    TIFF, MPO), ``"exif orientation 6 applied"``, ...), so a
    surprising result can be explained later without re-decoding.
    """

    image: np.ndarray
    width: int
    height: int
    notes: list[str] = field(default_factory=list)


def load_photo(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedPhoto:
    """Decode ``path`` into a :class:`DecodedPhoto`, or raise :class:`PhotoError` - never anything else.

    Order matters: the file is opened without blocking and must be a non-empty regular file; the pixel count
    comes from the header and is checked against ``max_pixels`` before any pixel is decoded; then the whole
    image is decoded (``load()``), so a truncated JPEG fails here instead of yielding a half-grey picture that
    would still produce (bad) faces.

    Pillow's own decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``, a hard error above twice its value,
    ~179 M by default) still applies at open; we leave that global alone and report its refusal as a
    ``"decompression bomb: ..."`` reason. A ``max_pixels`` above Pillow's limit is therefore capped by it
    unless the application raises ``Image.MAX_IMAGE_PIXELS`` itself.
    """
    path = Path(path)
    try:
        with _open_regular(path) as f:
            return _decode(f, max_pixels)
    except PhotoError as exc:
        exc.path = path
        raise
    except Exception as exc:  # the contract: one bad file must not take the batch down with it
        raise PhotoError(_reason_for(exc), path) from exc


def _open_regular(path: Path, *, allow_empty: bool = False) -> BinaryIO:
    """Open ``path`` for reading, refusing anything but a (non-empty) regular file.

    ``O_NONBLOCK`` makes opening a FIFO named ``x.jpg`` return at once instead of waiting forever for a
    writer; it changes nothing for regular files. The type is checked on the opened descriptor, so the file
    cannot be swapped between the check and the read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise PhotoError("not a file")
        if not stat.S_ISREG(st.st_mode):
            raise PhotoError("not a regular file")
        if st.st_size == 0 and not allow_empty:
            raise PhotoError("empty file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _decode(f: BinaryIO, max_pixels: int) -> DecodedPhoto:
    notes: list[str] = []
    with _open_image(f, max_pixels) as img:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise PhotoError(f"corrupt image: size {width}x{height}")
        if width * height > max_pixels:
            raise PhotoError(f"decompression bomb: {width * height} px > limit {max_pixels}")

        img.load()  # full decode now: truncated data raises here, not silently later
        upright = _exif_upright(img, notes)
        rgb = _to_rgb_array(upright, notes)  # a copy: independent of `img` from here on
        if _is_multi_frame(img):  # last, because it seeks away from the frame we just used
            animated = img.format in ("GIF", "WEBP", "PNG")
            notes.append("animated: first frame" if animated else "multi-frame: first frame")

    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    return DecodedPhoto(image=bgr, width=int(bgr.shape[1]), height=int(bgr.shape[0]), notes=notes)


def _open_image(f: BinaryIO, max_pixels: int) -> Image.Image:
    try:
        return Image.open(f, formats=_PIL_FORMATS)
    except Image.DecompressionBombError as exc:
        # Pillow's hard limit (2 x Image.MAX_IMAGE_PIXELS) fired while reading the header. Name the limit that
        # matters to our caller: theirs when the image exceeds it too, Pillow's when only Pillow's is lower.
        match = _BOMB_PIXELS.search(str(exc))
        if not match:
            raise PhotoError(f"decompression bomb: {_short(exc)}") from exc
        pixels, pillow_limit = int(match.group(1)), int(match.group(2))
        if pixels > max_pixels:
            raise PhotoError(f"decompression bomb: {pixels} px > limit {max_pixels}") from exc
        raise PhotoError(
            f"decompression bomb: {pixels} px > limit {pillow_limit} (PIL.Image.MAX_IMAGE_PIXELS)"
        ) from exc
    except Image.DecompressionBombWarning:
        # Only reachable when warnings are turned into errors (e.g. ``-W error``). Pillow's warning threshold
        # (~89 M px) is below our default limit and a legitimate 100 MP photo trips it; our own max_pixels
        # check, which runs next, is the one that decides, so open again with just that warning silenced.
        f.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(f, formats=_PIL_FORMATS)


def _is_multi_frame(img: Image.Image) -> bool:
    """Whether the file holds more frames than the one we use (animated GIF/WebP/APNG, multi-page TIFF, MPO).

    Best effort: a broken later frame must not cost us the good first one, so errors here just mean "no".
    """
    try:
        return bool(getattr(img, "is_animated", False))
    except Exception:
        return False


def _exif_upright(img: Image.Image, notes: list[str]) -> Image.Image:
    """Apply the EXIF orientation, which phones use instead of rotating pixels.

    Without it a portrait shot arrives sideways and the detector misses most faces. ``exif_transpose`` is only
    called when there is something to do, because otherwise it returns a full copy of the image. Broken EXIF
    is common (editors, messengers) and is not a reason to lose the photo: we keep the pixels as stored.
    """
    try:
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            upright = ImageOps.exif_transpose(img)
            notes.append(f"exif orientation {orientation} applied")
            return upright
    except Exception:
        notes.append("exif unreadable: orientation ignored")
    return img


def _to_rgb_array(img: Image.Image, notes: list[str]) -> np.ndarray:
    """Any Pillow mode -> ``(H, W, 3)`` uint8 RGB, recording what was done in ``notes``."""
    mode = img.mode

    if mode == "RGB":
        return np.asarray(img)
    if mode == "1":
        notes.append("bilevel converted")
        return _grey_to_rgb(np.asarray(img.convert("L")))
    if mode == "L":
        notes.append("greyscale converted")
        return _grey_to_rgb(np.asarray(img))
    if mode in ("P", "PA"):
        notes.append("palette converted")
        if mode == "PA" or "transparency" in img.info:
            return _flatten_alpha(np.asarray(img.convert("RGBA")), notes)
        return np.asarray(img.convert("RGB"))
    if mode in ("LA", "La"):
        notes.append("greyscale converted")
        return _flatten_alpha(np.asarray(img.convert("RGBA")), notes)
    if mode in ("RGBA", "RGBa"):
        return _flatten_alpha(np.asarray(img.convert("RGBA")), notes)
    if mode == "CMYK":
        notes.append("cmyk converted")  # naive conversion; embedded ICC profiles are not applied
        return np.asarray(img.convert("RGB"))
    if mode.startswith("I;16"):
        notes.append("16-bit scaled")
        return _grey_to_rgb(_scale_16bit(np.asarray(img)))
    if mode == "I":
        values = np.asarray(img)
        if values.size and values.min() >= 0 and values.max() <= 0xFFFF:
            # Pillow (older versions, some TIFFs) hands 16-bit greyscale over as 32-bit "I".
            notes.append("16-bit scaled")
            return _grey_to_rgb(_scale_16bit(values))
        notes.append("32-bit scaled by range")
        return _grey_to_rgb(_scale_by_range(values.astype(np.float64)))
    if mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            notes.append("float scaled")  # the usual [0, 1] convention
            grey = np.rint(values * 255.0).astype(np.uint8)
        else:
            notes.append("float scaled by range")
            grey = _scale_by_range(values)
        return _grey_to_rgb(grey)

    # Anything else Pillow can turn into RGB itself (YCbCr, LAB, HSV, RGBX, ...).
    try:
        converted = img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise PhotoError(f"unsupported mode: {mode}") from exc
    notes.append(f"{mode.lower()} converted")
    return np.asarray(converted)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 by dividing by 257 (rounded), so white stays white and every level keeps its place.

    Clipping at 255 - what a plain ``astype(uint8)`` or Pillow's ``convert("L")`` on "I" images effectively
    does - turns nearly every pixel of a real 16-bit photo white.
    """
    wide = values.astype(np.uint32)
    return ((wide + 128) // 257).astype(np.uint8)


def _scale_by_range(values: np.ndarray) -> np.ndarray:
    """Stretch min..max to 0..255: for data with no fixed scale (signed 32-bit ints, arbitrary floats)."""
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _flatten_alpha(rgba: np.ndarray, notes: list[str]) -> np.ndarray:
    """Composite over white rather than dropping alpha.

    Pixels under full transparency often hold black or leftover colour that no viewer ever shows; dropping
    alpha would hand those to the detector. White is what image viewers and browsers show, so the detector
    sees what the user sees. A fully opaque alpha channel is simply dropped (same result, cheaper).
    """
    alpha = rgba[:, :, 3]
    if alpha.size == 0 or alpha.min() == 255:
        notes.append("alpha dropped")
        return np.ascontiguousarray(rgba[:, :, :3])
    notes.append("alpha composited on white")
    a = alpha.astype(np.uint32)[:, :, None]
    rgb = rgba[:, :, :3].astype(np.uint32)
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------
# Exception -> reason
# --------------------------------------------------------------------------------------------------------------


def _reason_for(exc: BaseException) -> str:
    """Map whatever the OS or Pillow raised to a short reason (see :class:`PhotoError`)."""
    if isinstance(exc, Image.DecompressionBombError):
        return f"decompression bomb: {_short(exc)}"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if isinstance(exc, (IsADirectoryError, NotADirectoryError)):
        return "not a file"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image"
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, EOFError):
        return "truncated image"
    if isinstance(exc, OSError):
        message = str(exc)
        if "truncated" in message.lower():
            return "truncated image"
        if exc.errno is not None:  # a real I/O failure (EIO, ELOOP, ...), not a decoder complaint
            return f"io error: {_short(exc.strerror or message)}"
        return f"corrupt image: {_short(message)}"
    if isinstance(exc, (SyntaxError, ValueError, struct.error, IndexError, KeyError, TypeError, ZeroDivisionError)):
        return f"corrupt image: {type(exc).__name__}: {_short(exc)}"
    return f"decode failed: {type(exc).__name__}: {_short(exc)}"


def _short(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."
