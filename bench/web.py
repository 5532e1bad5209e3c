"""Latency of the people page and API on a library of 20,000 faces.

The library is synthetic in SQL (photos, faces, people, unknown clusters, noise, events: bulk-inserted rows, no
detector run) but every face points at a real photo file, so thumbnails are real crops: 250×250 LFW photos from
faces_dev, and 12-megapixel JPEGs (faces_dev photos upscaled to 4000×3000) for the largest cluster, a pessimistic
case for a cold thumbnail. The app runs in a real uvicorn server (a thread of this process); requests go over
HTTP on loopback.

    nice -n 10 python bench/web.py [--faces 20000] [--repeat 20]

Targets (issue 10, 2 cores): people page ≤ 300 ms, cached thumbnail ≤ 20 ms, label call ≤ 200 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FACES_DEV = Path(os.environ.get("FACE_DEV_DATA") or REPO.parent / "shared/data/faces_dev")


def build_library(home: Path, n_faces: int, seed: int = 0):
    from PIL import Image
    from sqlalchemy import insert

    from face_pipeline.core.db import get_engine
    from face_pipeline.core.db.schema import (
        FaceAssignmentEvent,
        FaceInstance,
        Person,
        Photo,
        PhotoBatch,
    )
    from face_pipeline.home import prepare_home
    from face_pipeline.settings import Settings

    rng = random.Random(seed)
    settings = Settings(home=home, web_token="bench-user-token-0000", web_admin_token="bench-admin-token-0000")
    prepare_home(settings, set_dagster_home=False)
    lfw = sorted(FACES_DEV.glob("*/lfw_*.jpg"))
    if not lfw:
        sys.exit(f"faces_dev photos not found at {FACES_DEV} (set FACE_DEV_DATA)")
    big_dir = home.parent / "big_photos"
    big_dir.mkdir(exist_ok=True)
    big = []
    for i, src in enumerate(lfw[:20]):  # 12 MP photos for the largest cluster
        p = big_dir / f"big_{i:02d}.jpg"
        Image.open(src).convert("RGB").resize((4000, 3000)).save(p, "JPEG", quality=90)
        big.append(p)

    faces_per_photo = 4
    n_photos = n_faces // faces_per_photo
    photos, faces = [], []
    for p in range(n_photos):
        is_big = p < len(big)
        path = big[p] if is_big else lfw[p % len(lfw)]
        w, h = (4000, 3000) if is_big else (250, 250)
        image_id = f"{p:016x}"
        photos.append(dict(batch="bench", path=str(path), rel_path=f"{p}.jpg", image_id=image_id, content_hash=image_id,
                           width=w, height=h, status="ok", faces=faces_per_photo))
        for k in range(faces_per_photo):
            s = w / 250
            cx, cy = (125 + rng.uniform(-6, 6)) * s, (120 + rng.uniform(-6, 6)) * s
            half = rng.uniform(35, 45) * s
            faces.append(dict(face_id=f"{image_id}_face{k}", image_id=image_id, batch="bench", face_index=k,
                              x1=cx - half, y1=cy - half, x2=cx + half, y2=cy + half, landmarks=[[0, 0]] * 5,
                              det_score=rng.uniform(0.6, 0.99), quality_score=rng.uniform(10, 30), embedded=True,
                              person_id=None, cluster_id=None, assignment_source=None, person_confidence=None))
    # people: 60 % of faces named (400 people), 30 % in unknown clusters (sizes 2..60), 10 % noise
    rng.shuffle(faces)
    big_faces = [f for f in faces if int(f["image_id"], 16) < len(big)]
    rest = [f for f in faces if int(f["image_id"], 16) >= len(big)]
    n_named, n_cluster = int(0.6 * n_faces), int(0.3 * n_faces)
    persons = [dict(person_id=f"person_{i:032x}", name=f"Person {i:03d}", status="active") for i in range(400)]
    for i, f in enumerate(rest[:n_named]):
        pid = persons[i % len(persons)]["person_id"]
        f.update(person_id=pid, cluster_id=pid, assignment_source=rng.choice(["cluster", "manual", "auto"]), person_confidence=1.0)
    clustered = big_faces + rest[n_named : n_named + n_cluster - len(big_faces)]
    c, i = 1, 0
    sizes = []
    while i < len(clustered):
        size = len(big_faces) if c == 1 else rng.randint(2, 60)
        for f in clustered[i : i + size]:
            f["cluster_id"] = f"unknown_cluster_{c}"
        sizes.append(min(size, len(clustered) - i))
        i += size
        c += 1
    for f in rest[n_named + n_cluster - len(big_faces):]:
        f["cluster_id"] = f"unknown_noise_{f['face_id']}"
    engine = get_engine(settings.sql_url)
    with engine.begin() as conn:
        conn.execute(insert(PhotoBatch), [dict(name="bench", source_dir=str(FACES_DEV), status="embedded", photos=n_photos, faces=n_faces)])
        conn.execute(insert(Person), persons)
        conn.execute(insert(Photo), photos)
        for j in range(0, len(faces), 2000):
            conn.execute(insert(FaceInstance), faces[j : j + 2000])
        conn.execute(insert(FaceAssignmentEvent), [dict(actor="bench", action="label_face", face_id=f["face_id"], to_person=f.get("person_id"))
                                                   for f in rest[:2000]])
    return settings, len(sizes), len(big_faces)


def serve(app) -> str:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(base + "/api/v1/whoami", timeout=2).read()
            return base
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def timed(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[float, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        body = r.read()
    return (time.perf_counter() - t0) * 1000, body


def stats(ms: list[float]) -> tuple[float, float]:
    ms = sorted(ms)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()

    from face_pipeline.web import create_app

    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    try:
        t0 = time.perf_counter()
        settings, n_clusters, n_big = build_library(tmp / "home", args.faces)
        build_s = time.perf_counter() - t0
        app = create_app(settings)
        base = serve(app)
        auth = {"Authorization": f"Bearer {settings.web_token}", "Content-Type": "application/json"}
        rows: list[tuple[str, float, float, str, str]] = []

        timed(base + "/")  # warm-up: imports, templates, the Dagster instance for the status line
        page = [timed(base + "/")[0] for _ in range(args.repeat)]
        rows.append(("people page GET /", *stats(page), "≤ 300", ""))
        persons = [timed(base + "/api/v1/persons?limit=100")[0] for _ in range(args.repeat)]
        rows.append(("GET /api/v1/persons (100)", *stats(persons), "", ""))
        clusters = [timed(base + "/api/v1/faces/clusters?limit=30")[0] for _ in range(args.repeat)]
        rows.append(("GET /api/v1/faces/clusters (30)", *stats(clusters), "", ""))

        data = json.loads(timed(base + "/api/v1/faces/clusters?limit=60&strip=20")[1])
        strips = {"12 MP photos": data["items"][0]["face_ids"][:20],
                  "250 px photos": next(c for c in data["items"][1:] if len(c["face_ids"]) >= 20)["face_ids"][:20]}
        for label, face_ids in strips.items():
            cold = [timed(f"{base}/api/v1/faces/{f}/thumb")[0] for f in face_ids]
            cached = [timed(f"{base}/api/v1/faces/{f}/thumb")[0] for f in face_ids for _ in range(3)]
            rows.append((f"thumbnail cold ({label})", *stats(cold), "", f"strip of 20: {sum(cold):.0f} ms"))
            rows.append((f"thumbnail cached ({label})", *stats(cached), "≤ 20", f"strip of 20: {sum(cached) / 3:.0f} ms"))

        targets = [c["cluster_id"] for c in data["items"][1 : 1 + args.repeat]]
        label = [timed(f"{base}/api/v1/faces/clusters/{cid}/label", json.dumps({"name": f"Bench {i}"}).encode(), auth)[0]
                 for i, cid in enumerate(targets)]
        rows.append(("label a cluster (POST …/label)", *stats(label), "≤ 200", f"clusters of {min(c['faces'] for c in data['items'][1:1 + args.repeat])}–{max(c['faces'] for c in data['items'][1:1 + args.repeat])} faces"))
        page_after = [timed(base + "/")[0] for _ in range(args.repeat)]
        rows.append(("people page after labelling", *stats(page_after), "≤ 300", ""))

        load = os.getloadavg()
        print(f"\nload average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) on {os.cpu_count()} CPUs")
        print(f"library: {args.faces} faces, 400 people, {n_clusters} unknown clusters (largest {n_big} faces on 12 MP photos), "
              f"built in {build_s:.1f} s; {os.cpu_count()} CPUs; {args.repeat} requests per row\n")
        print(f"| {'measurement':<38} | {'median ms':>9} | {'p95 ms':>8} | {'target':>6} | notes")
        print(f"|{'-' * 40}|{'-' * 11}|{'-' * 10}|{'-' * 8}|------")
        for name, med, p95, target, note in rows:
            print(f"| {name:<38} | {med:>9.1f} | {p95:>8.1f} | {target:>6} | {note}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
