"""CUDA vs CPU on the same photos: ingest throughput (detector + batched recogniser), training time, and whether
CUDA and CPU embeddings agree (cosine ≥ 0.999 face by face).

Run where a GPU is present (onnxruntime-gpu installed as docker/README.md "GPU" says, CUDA torch):
    nice -n 10 .venv/bin/python bench/gpu.py [--data DIR] [--limit 300] [--epochs 30]
Without CUDA it measures the CPU side only and says that CUDA is unavailable (and why: which providers
onnxruntime offers, whether torch sees a GPU).
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

import numpy as np  # noqa: E402

from face_pipeline.core.models import FaceModels, l2_normalize  # noqa: E402
from face_pipeline.core.photos import PHOTO_EXTENSIONS, load_photo  # noqa: E402
from face_pipeline.settings import Settings  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("FACE_DEV_DATA") or ROOT.parent / "shared" / "data" / "faces_dev")


def ingest_pass(models: FaceModels, images: list[np.ndarray]) -> tuple[float, np.ndarray, list]:
    """Detect + align + batched embed (the bare-model bound); returns (seconds, embeddings, boxes per photo)."""
    t0 = time.perf_counter()
    crops, boxes = [], []
    for img in images:
        faces = models.detect(img)
        boxes.append([f.bbox for f in faces])
        crops += [models.align(img, f.landmarks) for f in faces]
    emb = models.embed(crops)
    return time.perf_counter() - t0, emb, boxes


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    import onnxruntime
    import torch

    paths = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in PHOTO_EXTENSIONS)[: args.limit]
    images = [load_photo(p).image for p in paths]
    available = onnxruntime.get_available_providers()
    cuda_ort = "CUDAExecutionProvider" in available
    print(f"{len(images)} photos from {args.data}; onnxruntime providers: {available}; torch CUDA: {torch.cuda.is_available()}")
    base = Settings(home=ROOT / ".cache" / "unused_home")
    sides = {"CPU": FaceModels(base.model_copy(update={"providers": "CPUExecutionProvider"}))}
    if cuda_ort:
        sides["CUDA"] = FaceModels(base.model_copy(update={"providers": "CUDAExecutionProvider,CPUExecutionProvider"}))
    else:
        print("CUDA unavailable to onnxruntime: CPU only (install onnxruntime-gpu; see docker/README.md, GPU)")
    results = {}
    for name, m in sides.items():
        ingest_pass(m, images[:8])  # warm-up: sessions, CUDA context
        best = min((ingest_pass(m, images) for _ in range(2)), key=lambda r: r[0])
        results[name] = best
        print(f"ingest bound {name:<5} {len(images) / best[0]:8.1f} photos/s  {len(best[1]) / best[0]:8.1f} faces/s  ({best[0]:.1f} s)")
    if "CUDA" in results:
        (_, e_cpu, b_cpu), (_, e_gpu, b_gpu) = results["CPU"], results["CUDA"]
        if [len(b) for b in b_cpu] == [len(b) for b in b_gpu]:
            cos = np.sum(l2_normalize(e_cpu) * l2_normalize(e_gpu), axis=1)
            print(f"embeddings CUDA vs CPU: min cosine {cos.min():.5f}, mean {cos.mean():.5f}, "
                  f"faces below 0.999: {int((cos < 0.999).sum())} of {len(cos)}")
        else:
            print("CUDA and CPU found different numbers of faces in some photos: embeddings not compared face by face")

    # training: the projection head on the CPU embeddings' faces, labelled by their folder
    from face_pipeline.core.train import TrainConfig, train_projection_head

    person = [p.parent.name for p, b in zip(paths, results["CPU"][2]) for _ in b]
    X = results["CPU"][1]
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        t0 = time.perf_counter()
        res = train_projection_head(X, person, TrainConfig(epochs=args.epochs, device=device))
        print(f"training {device:<4} {time.perf_counter() - t0:6.1f} s  ({res.triplets:,} triplets, {res.people} people, final loss {res.losses[-1]:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
