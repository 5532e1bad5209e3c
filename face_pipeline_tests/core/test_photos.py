"""Tests for face_pipeline.core.photos, on real files written into tmp_path (no mocks of Pillow or the OS)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face_pipeline.core.photos import (
    PHOTO_EXTENSIONS,
    DecodedPhoto,
    PhotoError,
    ScanResult,
    content_hash,
    load_photo,
    scan_photos,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

def _insightface_sample() -> Path:
    # Located without importing insightface (slow: it pulls in onnxruntime and friends).
    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        return Path("/nonexistent/t1.jpg")
    return Path(spec.origin).parent / "data" / "images" / "t1.jpg"


INSIGHTFACE_SAMPLE = _insightface_sample()

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def noise_rgb(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(img: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kw)
    return path


def write_jpeg(path: Path, h: int = 120, w: int = 160, seed: int = 0) -> Path:
    return save(Image.fromarray(noise_rgb(h, w, seed)), path, "JPEG", quality=90)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bilevel_png(width: int, height: int, *, with_pixels: bool = True) -> bytes:
    """A 1-bit greyscale PNG declaring ``width`` x ``height``, built by hand so no big image is ever allocated.

    With ``with_pixels`` the IDAT holds every (all-black) row, zlib-compressed in blocks, so the file is a
    complete, valid PNG; without it the file is header-only and any attempt to decode it would fail.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    body = b""
    if with_pixels:
        rows_per_block = 1000
        block = (b"\0" * (1 + (width + 7) // 8)) * rows_per_block
        compressor = zlib.compressobj(1)
        parts = [compressor.compress(block) for _ in range(height // rows_per_block)]
        parts.append(compressor.compress(block[: (height % rows_per_block) * (1 + (width + 7) // 8)]))
        parts.append(compressor.flush())
        body = png_chunk(b"IDAT", b"".join(parts))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + body + png_chunk(b"IEND", b"")


def refused(path: Path, **kw) -> str:
    with pytest.raises(PhotoError) as info:
        load_photo(path, **kw)
    assert info.value.path == path
    return info.value.reason


def assert_well_formed(photo: DecodedPhoto) -> None:
    img = photo.image
    assert isinstance(img, np.ndarray)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.flags["C_CONTIGUOUS"] and img.flags["WRITEABLE"]  # OpenCV draws on it in place
    assert (photo.height, photo.width) == img.shape[:2]


def bgr(rgb: tuple[int, int, int]) -> list[int]:
    return list(rgb[::-1])


# --------------------------------------------------------------------------------------------------------------
# load_photo: good inputs
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not INSIGHTFACE_SAMPLE.exists(), reason="insightface sample image not installed")
def test_real_photo_loads_as_bgr():
    photo = load_photo(INSIGHTFACE_SAMPLE)
    assert_well_formed(photo)
    with Image.open(INSIGHTFACE_SAMPLE) as ref:
        assert (photo.width, photo.height) == ref.size
        expected = np.asarray(ref.convert("RGB"))[:, :, ::-1]
    np.testing.assert_array_equal(photo.image, expected)
    assert photo.notes == []


def test_rgb_png_is_returned_as_bgr_exactly(tmp_path):
    rgb = noise_rgb()
    photo = load_photo(save(Image.fromarray(rgb), tmp_path / "a.png"))
    assert_well_formed(photo)
    np.testing.assert_array_equal(photo.image, rgb[:, :, ::-1])
    assert photo.notes == []


def test_greyscale_jpeg_becomes_three_equal_channels(tmp_path):
    grey = np.tile(np.arange(0, 200, dtype=np.uint8), (50, 1))
    photo = load_photo(save(Image.fromarray(grey, "L"), tmp_path / "grey.jpg", "JPEG", quality=95))
    assert_well_formed(photo)
    assert (photo.width, photo.height) == (200, 50)
    assert (photo.image[:, :, 0] == photo.image[:, :, 1]).all()
    assert (photo.image[:, :, 1] == photo.image[:, :, 2]).all()
    assert "greyscale converted" in photo.notes


def test_cmyk_jpeg_keeps_its_colours(tmp_path):
    rgb = np.zeros((64, 96, 3), dtype=np.uint8)
    rgb[:, :32] = RED
    rgb[:, 32:64] = GREEN
    rgb[:, 64:] = BLUE
    path = save(Image.fromarray(rgb).convert("CMYK"), tmp_path / "cmyk.jpg", "JPEG", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"  # the file really is CMYK
    photo = load_photo(path)
    assert_well_formed(photo)
    assert "cmyk converted" in photo.notes
    for x, colour in ((16, RED), (48, GREEN), (80, BLUE)):
        assert np.abs(photo.image[32, x].astype(int) - bgr(colour)).max() <= 8, (x, photo.image[32, x])


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 257, 1000, 30000, 40000, 65535]], dtype=np.uint16)
    path = save(Image.fromarray(levels), tmp_path / "deep.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # 16-bit greyscale, not silently 8-bit
    photo = load_photo(path)
    assert_well_formed(photo)
    # Clipping would give [0, 255, 255, 255, 255, 255]; scaling by 257 keeps the levels apart.
    assert photo.image[0, :, 0].tolist() == [0, 1, 4, 117, 156, 255]
    assert "16-bit scaled" in photo.notes


def test_rgba_png_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent black: must show as white, not black
    rgba[0, 2] = (0, 0, 255, 128)  # half-transparent blue
    rgba[1] = (0, 255, 0, 255)
    photo = load_photo(save(Image.fromarray(rgba, "RGBA"), tmp_path / "alpha.png"))
    assert_well_formed(photo)
    assert photo.image[0, 0].tolist() == bgr(RED)
    assert photo.image[0, 1].tolist() == [255, 255, 255]
    assert photo.image[0, 2].tolist() == [255, 127, 127]  # BGR of blue at 50% over white
    assert "alpha composited on white" in photo.notes


def test_fully_opaque_alpha_is_just_dropped(tmp_path):
    rgba = np.dstack([noise_rgb(), np.full((120, 160), 255, dtype=np.uint8)])
    photo = load_photo(save(Image.fromarray(rgba, "RGBA"), tmp_path / "opaque.png"))
    np.testing.assert_array_equal(photo.image, rgba[:, :, 2::-1])
    assert photo.notes == ["alpha dropped"]


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (40, 30), c) for c in (RED, GREEN, BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as check:
        assert check.n_frames == 3
    photo = load_photo(path)
    assert_well_formed(photo)
    assert (photo.image.reshape(-1, 3) == bgr(RED)).all()
    assert "animated: first frame" in photo.notes


def test_multi_page_tiff_uses_first_page(tmp_path):
    pages = [Image.new("RGB", (40, 30), c) for c in (GREEN, BLUE)]
    path = tmp_path / "scan.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    photo = load_photo(path)
    assert (photo.image.reshape(-1, 3) == bgr(GREEN)).all()
    assert "multi-frame: first frame" in photo.notes


def test_exif_orientation_6_turns_the_image_upright(tmp_path):
    stored = np.zeros((200, 300, 3), dtype=np.uint8)  # landscape as stored by the sensor
    stored[:50, :50] = (255, 255, 255)  # white marker, top-left of the stored pixels
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = save(img, tmp_path / "portrait.jpg", "JPEG", quality=95, exif=exif.tobytes())

    photo = load_photo(path)
    assert_well_formed(photo)
    assert (photo.width, photo.height) == (200, 300)  # swapped
    # Rotating 90 degrees clockwise moves the top-left marker to the top-right.
    assert photo.image[10, 190].min() > 200
    assert photo.image[10, 10].max() < 50
    assert "exif orientation 6 applied" in photo.notes


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_broken_exif_keeps_the_photo(tmp_path):
    path = write_jpeg(tmp_path / "a.jpg")
    data = path.read_bytes()
    # An APP1 "Exif" segment whose TIFF header is garbage, inserted right after SOI.
    payload = b"Exif\0\0" + b"II*\0" + b"\xff\xff\xff\x7f" + b"\0" * 16
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    path.write_bytes(data[:2] + app1 + data[2:])
    photo = load_photo(path)
    assert_well_formed(photo)
    assert (photo.width, photo.height) == (160, 120)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("1", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("P+transparency", "PNG"), ("RGBA", "PNG"),
     ("CMYK", "TIFF"), ("I", "TIFF"), ("F", "TIFF"), ("I;16", "TIFF"), ("YCbCr", "TIFF"), ("RGB", "WEBP"),
     ("RGB", "BMP")],
)
def test_every_mode_becomes_bgr_uint8(tmp_path, mode, fmt):
    base = Image.fromarray(noise_rgb(40, 50))
    if mode in ("I", "F", "I;16"):
        img = Image.fromarray((np.asarray(base.convert("L")).astype(np.float32) / 255.0), "F")
        if mode != "F":
            img = Image.fromarray((np.asarray(img) * 60000).astype(np.uint16 if mode == "I;16" else np.int32))
    elif mode == "P+transparency":
        img = base.convert("P")
        img.info["transparency"] = 0  # palette entry 0 is transparent
    else:
        img = base.convert(mode)
    path = save(img, tmp_path / f"x.{fmt.lower()}", fmt)
    photo = load_photo(path)
    assert_well_formed(photo)
    assert (photo.width, photo.height) == (50, 40)
    assert photo.image.max() > 0  # not an all-black result from a bad conversion


# --------------------------------------------------------------------------------------------------------------
# load_photo: bad inputs, one per reason
# --------------------------------------------------------------------------------------------------------------


def test_zero_byte_file_is_refused(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert refused(path) == "empty file"


def test_truncated_jpeg_is_refused(tmp_path):
    path = write_jpeg(tmp_path / "cut.jpg", 240, 320)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as header_only:
        assert header_only.size == (320, 240)  # the header survived; only the pixels are missing
    assert refused(path) == "truncated image"


def test_truncated_png_is_refused(tmp_path):
    path = save(Image.fromarray(noise_rgb()), tmp_path / "cut.png")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert refused(path) == "truncated image"


def test_text_file_named_jpg_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: milk, eggs\n")
    assert refused(path) == "not an image"


def test_format_outside_photo_formats_is_not_an_image(tmp_path):
    # A valid image of a format we do not accept (Pillow could open it) is refused, not decoded.
    path = save(Image.fromarray(noise_rgb()), tmp_path / "sneaky.jpg", "TGA")
    assert refused(path) == "not an image"


def test_30000x30000_png_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bilevel_png(30000, 30000))
    assert path.stat().st_size < 1_000_000  # a small file ...
    assert struct.unpack(">II", path.read_bytes()[16:24]) == (30000, 30000)  # ... really declaring 30000x30000
    assert refused(path) == "decompression bomb: 900000000 px > limit 120000000"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pixel_limit_is_checked_from_header_before_decoding(tmp_path):
    # 150 M px: over our default limit but under Pillow's hard limit, so it is our check that refuses it. The
    # file has no pixel data at all: decoding it would fail differently, so this reason proves we did not.
    path = tmp_path / "big.png"
    path.write_bytes(bilevel_png(15000, 10000, with_pixels=False))
    assert refused(path) == "decompression bomb: 150000000 px > limit 120000000"


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_pillow_bomb_warning_as_error_does_not_override_our_limit(tmp_path):
    # 95 M px is above Pillow's warning threshold (~89 M) but within our 120 M default. Even when warnings are
    # errors, our limit decides: the header-only file gets past the size check and fails at decoding instead.
    path = tmp_path / "large.png"
    path.write_bytes(bilevel_png(10000, 9500, with_pixels=False))
    reason = refused(path)
    assert "bomb" not in reason.lower(), reason


def test_max_pixels_argument_is_honoured(tmp_path):
    path = write_jpeg(tmp_path / "a.jpg", 100, 200)
    assert refused(path, max_pixels=19_999) == "decompression bomb: 20000 px > limit 19999"
    assert load_photo(path, max_pixels=20_000).width == 200


def _nobody_loads(paths: list[Path]) -> list[str]:
    """Run load_photo on ``paths`` as user ``nobody`` (uid/gid 65534) in a child process; one result each."""
    code = (
        "import json, sys\n"
        "from face_pipeline.core.photos import load_photo, PhotoError\n"
        "out = []\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        out.append('ok %dx%d' % (lambda d: (d.width, d.height))(load_photo(p)))\n"
        "    except PhotoError as e:\n"
        "        out.append('PhotoError: ' + e.reason)\n"
        "    except BaseException as e:\n"
        "        out.append('ESCAPED: ' + type(e).__name__)\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code]
    proc = subprocess.run(cmd + [str(p) for p in paths], capture_output=True, text=True, env=env, timeout=60,
                          cwd="/")
    if proc.returncode != 0:
        pytest.skip(f"cannot run Python as user nobody here: {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_unreadable_file_is_permission_denied(tmp_path):
    if os.geteuid() != 0:
        path = write_jpeg(tmp_path / "locked.jpg")
        path.chmod(0)
        try:
            assert refused(path) == "permission denied"
        finally:
            path.chmod(0o644)
        return

    # As root, chmod 000 does not stop reads, so drop to user nobody in a child process. tmp_path's parents
    # are private to root, so use a world-traversable folder, and prove with a readable control file that
    # the only thing stopping nobody is the file's own mode.
    if shutil.which("setpriv") is None:
        pytest.skip("running as root and setpriv (util-linux) is not available to drop privileges")
    folder = Path(tempfile.mkdtemp(prefix="photos-perm-"))
    try:
        folder.chmod(0o755)
        readable = write_jpeg(folder / "readable.jpg")
        locked = write_jpeg(folder / "locked.jpg")
        readable.chmod(0o644)
        locked.chmod(0)
        assert _nobody_loads([readable, locked]) == ["ok 160x120", "PhotoError: permission denied"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_directory_named_jpg_is_not_a_file(tmp_path):
    (tmp_path / "album.jpg").mkdir()
    assert refused(tmp_path / "album.jpg") == "not a file"


def test_fifo_named_jpg_is_refused_without_blocking(tmp_path):
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)  # opening it for reading the ordinary way would wait forever for a writer
    assert refused(path) == "not a regular file"


def test_missing_file_is_not_found(tmp_path):
    assert refused(tmp_path / "gone.jpg") == "not found"


@pytest.mark.parametrize("seed", range(8))
def test_garbage_after_a_valid_jpeg_header_only_ever_raises_photo_error(tmp_path, seed):
    good = write_jpeg(tmp_path / "good.jpg", seed=seed).read_bytes()
    rng = np.random.default_rng(seed)
    data = bytearray(good)
    # Corrupt a run of bytes somewhere after the first few headers.
    start = int(rng.integers(20, len(data) - 200))
    data[start : start + 150] = rng.integers(0, 256, 150, dtype=np.uint8).tobytes()
    path = tmp_path / "bad.jpg"
    path.write_bytes(bytes(data))
    try:
        assert_well_formed(load_photo(path))  # JPEG is forgiving: some corruptions still decode
    except PhotoError as exc:
        assert exc.reason


def test_photo_error_str_names_the_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(PhotoError, match=r"empty\.png: empty file"):
        load_photo(path)


# --------------------------------------------------------------------------------------------------------------
# content_hash
# --------------------------------------------------------------------------------------------------------------


def test_content_hash_is_sha256_of_the_bytes(tmp_path):
    data = os.urandom(3 * (1 << 20) + 12345)  # spans several read chunks
    path = tmp_path / "blob.jpg"
    path.write_bytes(data)
    assert content_hash(path) == hashlib.sha256(data).hexdigest()


def test_content_hash_ignores_name_and_location(tmp_path):
    a = write_jpeg(tmp_path / "a.jpg")
    b = tmp_path / "sub" / "renamed.JPG"
    b.parent.mkdir()
    shutil.copyfile(a, b)
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash(write_jpeg(tmp_path / "c.jpg", seed=1))


def test_content_hash_of_missing_file_is_photo_error(tmp_path):
    with pytest.raises(PhotoError) as info:
        content_hash(tmp_path / "gone.jpg")
    assert info.value.reason == "not found"


# --------------------------------------------------------------------------------------------------------------
# scan_photos
# --------------------------------------------------------------------------------------------------------------


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_scan_finds_photos_in_nested_year_month_event_folders(tmp_path):
    batch = tmp_path / "batch"
    expected = [
        touch(batch / "2021" / "07" / "wedding" / "IMG_0001.jpg"),
        touch(batch / "2021" / "07" / "wedding" / "IMG_0002.JPEG"),
        touch(batch / "2021" / "12" / "xmas.PNG"),
        touch(batch / "2022" / "01" / "ski" / "day1" / "a.webp"),
        touch(batch / "2022" / "scan.tiff"),
        touch(batch / "top.gif"),
        touch(batch / "z.Bmp"),
        touch(batch / "y.TIF"),
    ]
    result = scan_photos(batch)
    assert isinstance(result, ScanResult)
    assert result.photos == sorted(expected)
    assert all(p.is_absolute() for p in result.photos)
    assert result.skipped == {} and result.skipped_total == 0


def test_scan_returns_absolute_paths_under_the_folder_as_given(tmp_path, monkeypatch):
    touch(tmp_path / "batch" / "a.jpg")
    monkeypatch.chdir(tmp_path)
    result = scan_photos(Path("batch"))
    assert result.photos == [tmp_path / "batch" / "a.jpg"]


def test_scan_skips_and_counts_non_photo_files(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "notes.txt")
    touch(tmp_path / "trip" / "clip.mp4")
    touch(tmp_path / "trip" / "clip.MOV")
    touch(tmp_path / "README")
    touch(tmp_path / "raw.heic")  # not decodable without pillow-heif, so not a photo for us
    result = scan_photos(tmp_path)
    assert result.photos == [tmp_path / "a.jpg"]
    assert result.skipped == {"not a photo": 5}
    assert result.skipped_total == 5


def test_scan_skips_hidden_files_and_folders(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "._a.jpg")  # macOS AppleDouble: photo extension, not an image
    touch(tmp_path / ".DS_Store")
    touch(tmp_path / ".thumbnails" / "a.jpg")
    touch(tmp_path / ".thumbnails" / "b.jpg")
    result = scan_photos(tmp_path)
    assert result.photos == [tmp_path / "a.jpg"]
    assert result.skipped == {"hidden": 3}  # the hidden folder counts once, not per file inside


def test_scan_skips_nas_thumbnail_folders(tmp_path):
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "@eaDir" / "a.jpg" / "SYNOPHOTO_THUMB_XL.jpg")
    result = scan_photos(tmp_path)
    assert result.photos == [tmp_path / "a.jpg"]
    assert result.skipped == {"system folder": 1}


def test_scan_survives_a_symlink_loop_and_lists_each_photo_once(tmp_path):
    batch = tmp_path / "batch"
    touch(batch / "top.jpg")
    touch(batch / "event" / "inner.jpg")
    (batch / "event" / "back_to_parent").symlink_to("..", target_is_directory=True)
    (batch / "event" / "self").symlink_to(".", target_is_directory=True)
    result = scan_photos(batch)
    assert result.photos == [batch / "event" / "inner.jpg", batch / "top.jpg"]
    assert result.skipped == {"symlink loop": 2}


def test_scan_follows_symlinked_folders_inside_the_batch_once(tmp_path):
    batch = tmp_path / "batch"
    touch(batch / "2020" / "party" / "p.jpg")
    (batch / "best_of").symlink_to(batch / "2020" / "party", target_is_directory=True)
    (batch / "favourite.jpg").symlink_to(batch / "2020" / "party" / "p.jpg")
    result = scan_photos(batch)
    assert result.photos == [batch / "2020" / "party" / "p.jpg"]  # listed once, by its real location
    assert result.skipped == {"already scanned": 1, "duplicate": 1}  # second way into the folder; file link


def test_scan_follows_a_symlinked_batch_folder(tmp_path):
    touch(tmp_path / "library" / "2020" / "a.jpg")
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "batch").symlink_to(tmp_path / "library", target_is_directory=True)
    result = scan_photos(tmp_path / "inbox" / "batch")
    assert result.photos == [tmp_path / "inbox" / "batch" / "2020" / "a.jpg"]


def test_scan_does_not_leave_the_batch_through_symlinks(tmp_path):
    batch = tmp_path / "batch"
    touch(batch / "a.jpg")
    touch(tmp_path / "elsewhere" / "private.jpg")
    (batch / "escape").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (batch / "escape.jpg").symlink_to(tmp_path / "elsewhere" / "private.jpg")
    (batch / "root").symlink_to("/", target_is_directory=True)
    result = scan_photos(batch)
    assert result.photos == [batch / "a.jpg"]
    assert result.skipped == {"outside batch": 3}


def test_scan_counts_broken_symlinks_and_special_files(tmp_path):
    touch(tmp_path / "a.jpg")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    result = scan_photos(tmp_path)
    assert result.photos == [tmp_path / "a.jpg"]
    assert result.skipped == {"broken symlink": 1, "not a regular file": 1}


def test_scan_of_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        scan_photos(tmp_path / "nope")
    touch(tmp_path / "file.jpg")
    with pytest.raises(NotADirectoryError):
        scan_photos(tmp_path / "file.jpg")


def test_photo_extensions_are_lowercase_and_decodable():
    assert all(ext == ext.lower() and ext.startswith(".") for ext in PHOTO_EXTENSIONS)
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"} <= PHOTO_EXTENSIONS
    registered = Image.registered_extensions()
    assert all(ext in registered for ext in PHOTO_EXTENSIONS)


def test_scanned_photos_load(tmp_path):
    write_jpeg(tmp_path / "2023" / "a.jpg")
    save(Image.fromarray(noise_rgb(), "RGB"), tmp_path / "2023" / "b.png")
    photos = scan_photos(tmp_path).photos
    assert [load_photo(p).width for p in photos] == [160, 160]
