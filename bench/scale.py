"""Library-wide organise at 50k, 200k and 1M faces, and incremental organise of 1,000 new faces.

What is measured is the product's own code on a real SQL database: ``organize.supervised_assignment`` (people
from human labels) + ``organize.cluster_unknown`` (clustering of everyone else) with their SQL writes, exactly as
the ``supervised_assignments`` and ``unknown_clusters`` assets run them, then ``organize.organize_new_faces`` for
a new batch of 1,000 faces (the follow-up organise run after an ingest).

Data: synthetic 512-d embeddings with the identity structure of a real library (:func:`make_library`): a power
law of photos per person (Zipf), ~30 % of faces belonging to people seen once, look-alike pairs (people whose
centres are closer than many same-person pairs), photos of 1–4 faces, and human labels on 3 faces of the
people with ≥ 8 photos (what a user labels first). Cosine statistics follow w600k_mbf on LFW (see bench/cluster.py).
The SQL rows (one batch per 20k faces) and the per-batch embedding files are written by a first process; the
organise runs in a second, fresh process (as a Dagster run would), so its time and peak RSS (ru_maxrss) are its
own; the incremental organise in a third.

Targets (issue 11): ≤ 15 s / 60 s / 10 min at 50k / 200k / 1M on 2 cores, peak RSS ≤ 2 GB at 200k and
≤ 8 GB at 1M, incremental 1,000 faces against 1M ≤ 5 s.

Usage: nice -n 10 .venv/bin/python bench/scale.py [--sizes 50000,200000,1000000] [--db sqlite,postgresql]
PostgreSQL: a fresh database per size on 127.0.0.1:5432 (user postgres), dropped afterwards (``--pg-url`` to
change the server).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from synthetic import direction_sampler, faces_around  # noqa: E402 (bench/synthetic.py)

TARGETS_S = {50_000: 15.0, 200_000: 60.0, 1_000_000: 600.0}
TARGET_RSS_MB = {200_000: 2048.0, 1_000_000: 8192.0}
INCR_TARGET_S = 5.0
BATCH_FACES = 20_000
NEW_FACES = 1_000


# ---------------------------------------------------------------------------------------------- synthetic data ---
def make_library(n: int, seed: int = 0, dim: int = 512, singleton_frac: float = 0.30, lookalike_frac: float = 0.05):
    """(X unit float32 (n, dim), identity (n,), photo (n,)) with a real library's identity structure.

    * Identities of 2+ faces: Zipf(2.0) sizes capped at 600; then people seen once until they hold
      ``singleton_frac`` of all faces.
    * Directions: anisotropic Gaussian (eigenvalues i^-0.7, effective dimension ~60) plus a shared mean, so
      different people have cosine mean ~0.04; faces = sqrt(rho)·centre + sqrt(1-rho)·noise, rho ~ U(0.35, 0.7)
      per person ± 0.15 per face (same-person cosine median ~0.5, a tail of bad photos).
    * Look-alikes: ``lookalike_frac`` of the multi-photo people get a twin: a centre at cosine ~0.65 to theirs.
    """
    rng = np.random.default_rng(seed)
    directions, mean = direction_sampler(rng, dim, 0.7)

    multi_target = int(round(n * (1 - singleton_frac)))
    sizes: list[int] = []
    total = 0
    while total < multi_target:
        s = int(min(max(2, rng.zipf(2.0)), 600, max(2, multi_target - total)))
        sizes.append(s)
        total += s
    n_multi = len(sizes)
    sizes += [1] * max(0, n - total)
    size_arr = np.asarray(sizes)
    centres = directions(size_arr.size) + 0.3 * mean
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # look-alike pairs among the multi-photo people: the twin's centre at cosine ~0.65
    twins = rng.choice(n_multi, size=int(lookalike_frac * n_multi) // 2 * 2, replace=False).reshape(-1, 2)
    for a, b in twins:
        mix = centres[a] * 0.8 + centres[b] * 0.6
        centres[b] = mix / np.linalg.norm(mix)
    return faces_around(centres, size_arr, n, rng, directions)


# ------------------------------------------------------------------------------------------- child: build ---
def _settings(home: str, url: str | None):
    from face_pipeline.settings import Settings

    return Settings(home=Path(home), database_url=url)


def _insert_faces(settings, batch: str, face_ids, image_ids, persons=None) -> None:
    from sqlalchemy import insert

    from face_pipeline.core.db import session_scope
    from face_pipeline.core.db.schema import FaceInstance, PhotoBatch

    persons = persons or {}
    with session_scope(settings.sql_url) as s:
        s.execute(insert(PhotoBatch), [{"name": batch, "source_dir": "/synthetic", "status": "embedded",
                                         "photos": len(set(image_ids)), "faces": len(face_ids)}])
        rows = [
            {"face_id": f, "image_id": im, "batch": batch, "face_index": 0, "x1": 0.0, "y1": 0.0, "x2": 64.0, "y2": 64.0,
             "landmarks": [], "det_score": 0.9, "quality_score": 0.8, "embedding_norm": 22.0, "embedding_model": "synthetic",
             "embedded": True, "person_id": persons.get(f), "assignment_source": "manual" if f in persons else None,
             "person_confidence": 1.0 if f in persons else None}
            for f, im in zip(face_ids, image_ids)
        ]
        for i in range(0, len(rows), 5000):
            s.execute(insert(FaceInstance), rows[i : i + 5000])


def build(home: str, url: str | None, n: int, seed: int) -> dict:
    from sqlalchemy import insert

    from face_pipeline.core.db import session_scope, upgrade
    from face_pipeline.core.db.schema import Person
    from face_pipeline.core.embedding_files import save_batch_embeddings

    t0 = time.perf_counter()
    settings = _settings(home, url)
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.sql_url)
    X, ident, photo = make_library(n + NEW_FACES, seed)
    face_ids = [f"img{p:08d}_face{i:07d}" for i, p in enumerate(photo)]
    image_ids = [f"img{p:08d}" for p in photo]
    counts = np.bincount(ident)
    # Labels a user gives first: 3 faces of each person with >= 8 photos (among the first n faces).
    labelled: dict[str, str] = {}
    seen: dict[int, int] = {}
    for i in range(n):
        p = int(ident[i])
        if counts[p] >= 8 and seen.get(p, 0) < 3:
            seen[p] = seen.get(p, 0) + 1
            labelled[face_ids[i]] = f"person_{p:08d}"
    with session_scope(settings.sql_url) as s:
        people = sorted(set(labelled.values()))
        for i in range(0, len(people), 5000):
            s.execute(insert(Person), [{"person_id": pid, "name": pid, "status": "active"} for pid in people[i : i + 5000]])
    for b, start in enumerate(range(0, n, BATCH_FACES)):
        sl = slice(start, min(n, start + BATCH_FACES))
        batch = f"batch{b:04d}"
        _insert_faces(settings, batch, face_ids[sl], image_ids[sl], labelled)
        save_batch_embeddings(settings, batch, face_ids[sl], X[sl])
    np.save(Path(home) / "new_faces.npy", X[n:])
    Path(home, "new_faces.json").write_text(json.dumps({"face_ids": face_ids[n:], "image_ids": image_ids[n:]}))
    singles = float((counts[ident[:n]] == 1).mean())
    return {"seconds": time.perf_counter() - t0, "people_labelled": len(set(labelled.values())), "labels": len(labelled),
            "singleton_faces": singles, "identities": int(len(np.unique(ident[:n])))}


# ----------------------------------------------------------------------------------------- child: organise ---
def _cpu_s() -> float:
    """Process CPU seconds (all threads): on a shared machine it moves far less than wall time."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def organise(home: str, url: str | None) -> dict:
    from face_pipeline.core import organize

    settings = _settings(home, url)
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    lib = organize.load_library(settings)
    t_load = time.perf_counter() - t0
    a = organize.supervised_assignment(settings, lib=lib)
    t_sup = time.perf_counter() - t0 - t_load
    lib = organize.refresh_labels(settings, lib)
    c = organize.cluster_unknown(settings, lib=lib)
    total = time.perf_counter() - t0
    return {"seconds": total, "load_s": t_load, "supervised_s": t_sup, "cluster_s": total - t_load - t_sup,
            "assigned": a.assigned, "clusters": c.clusters, "noise": c.noise, "unknown": c.unknown_faces,
            "cpu_s": _cpu_s() - cpu0, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def incremental(home: str, url: str | None) -> dict:
    from face_pipeline.core import organize
    from face_pipeline.core.embedding_files import save_batch_embeddings

    settings = _settings(home, url)
    X = np.load(Path(home) / "new_faces.npy")
    meta = json.loads(Path(home, "new_faces.json").read_text())
    _insert_faces(settings, "batch_new", meta["face_ids"], meta["image_ids"])  # what ingest wrote before
    save_batch_embeddings(settings, "batch_new", meta["face_ids"], X)
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    rep = organize.organize_new_faces(settings, meta["face_ids"])
    return {"seconds": time.perf_counter() - t0, "cpu_s": _cpu_s() - cpu0, "assigned": rep.assigned, "joined": rep.joined_clusters, "noise": rep.noise,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_main(argv: list[str]) -> None:
    what, home, url, n, seed = argv[0], argv[1], (argv[2] or None), int(argv[3]), int(argv[4])
    out = {"build": lambda: build(home, url, n, seed), "organise": lambda: organise(home, url),
           "incremental": lambda: incremental(home, url)}[what]()
    print("RESULT " + json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------------------- parent ---
def _child(what: str, home: Path, url: str | None, n: int, seed: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", what, str(home), url or "", str(n), str(seed)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}


def _db_size_mb(home: Path, url: str | None) -> float:
    """Size of the face library's SQL database after organise (PostgreSQL: pg_database_size; SQLite: the file)."""
    if url is None:
        return sum(f.stat().st_size for f in home.glob("face_pipeline.sqlite*")) / 2**20
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return c.execute(text("SELECT pg_database_size(current_database())")).scalar() / 2**20
    finally:
        engine.dispose()


def _pg_admin(base: str, sql: str) -> None:
    import psycopg2
    from sqlalchemy.engine import make_url

    u = make_url(base)
    conn = psycopg2.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="50000,200000,1000000")
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--pg-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--timeout", type=float, default=3 * 3600, help="per child process, seconds")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"cpu_count {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}; organise = supervised_assignment + "
          f"cluster_unknown (method graph) + SQL writes, fresh process per step")
    rows = []
    for db in args.db.split(","):
        for n in sizes:
            home = Path(tempfile.mkdtemp(prefix=f"scale-{n}-"))
            url, dbname = None, None
            if db == "postgresql":
                dbname = f"fp_scale_{uuid.uuid4().hex[:8]}"
                try:
                    _pg_admin(args.pg_url, f'CREATE DATABASE "{dbname}"')
                except Exception as exc:  # noqa: BLE001 - report and go on with the other rows
                    print(f"PostgreSQL unreachable ({type(exc).__name__}): skipped")
                    break
                url = args.pg_url.rsplit("/", 1)[0] + f"/{dbname}"
            try:
                b = _child("build", home, url, n, args.seed, args.timeout)
                o = _child("organise", home, url, n, args.seed, args.timeout) if "error" not in b else {"error": "build failed"}
                inc = _child("incremental", home, url, n, args.seed, args.timeout) if "error" not in o else {"error": "organise failed"}
                b["db_mb"] = _db_size_mb(home, url)
                b["embeddings_mb"] = sum(f.stat().st_size for f in home.rglob("*.npz")) / 2**20
            finally:
                shutil.rmtree(home, ignore_errors=True)
                if dbname:
                    _pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            rows.append((db, n, b, o, inc, os.getloadavg()[0]))
            print(json.dumps({"db": db, "n": n, "build": b, "organise": o, "incremental": inc}), flush=True)

    print()
    print("| db | faces | build s | organise s (load / supervised / cluster+SQL) | organise cpu s | target s | peak RSS MB | target MB | clusters | assigned | incremental 1,000 s | SQL MB | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for db, n, b, o, inc, load in rows:
        if "error" in o:
            print(f"| {db} | {n:,} | {b.get('seconds', float('nan')):.0f} | {o['error']} | | {TARGETS_S.get(n, '')} | | | | | | | {load:.1f} |")
            continue
        ok = "✓" if o["seconds"] <= TARGETS_S.get(n, math.inf) else f"✗ ×{o['seconds'] / TARGETS_S[n]:.1f}"
        mem_ok = "" if n not in TARGET_RSS_MB else ("✓" if o["rss_mb"] <= TARGET_RSS_MB[n] else "✗")
        inc_s = f"{inc['seconds']:.2f}" if "error" not in inc else inc["error"]
        inc_ok = "" if "error" in inc else (" ✓" if inc["seconds"] <= INCR_TARGET_S else f" ✗ ×{inc['seconds'] / INCR_TARGET_S:.1f}")
        print(f"| {db} | {n:,} | {b['seconds']:.0f} | {o['seconds']:.1f} ({o['load_s']:.1f} / {o['supervised_s']:.1f} / {o['cluster_s']:.1f}) "
              f"{ok} | {o.get('cpu_s', float('nan')):.0f} | {TARGETS_S.get(n, '')} | {o['rss_mb']:.0f} {mem_ok} | {TARGET_RSS_MB.get(n, '')} | {o['clusters']:,} | "
              f"{o['assigned']:,} | {inc_s}{inc_ok} | {b.get('db_mb', float('nan')):.0f} | {load:.1f} |")
    for db in sorted({r[0] for r in rows}):
        pts = [(r[1], r[3]["seconds"], r[3]["rss_mb"]) for r in rows if r[0] == db and "error" not in r[3]]
        if len(pts) >= 2:
            ln = np.log([p[0] for p in pts])
            t_exp = np.polyfit(ln, np.log([p[1] for p in pts]), 1)[0]
            m_exp = np.polyfit(ln, np.log([p[2] for p in pts]), 1)[0]
            print(f"{db}: growth exponent time ~ N^{t_exp:.2f}, peak RSS ~ N^{m_exp:.2f} (fit over {', '.join(f'{p[0]:,}' for p in pts)})")
    if rows and rows[0][2].get("singleton_faces") is not None:
        b = rows[0][2]
        print(f"data at {rows[0][1]:,}: {b['identities']:,} identities, {100 * b['singleton_faces']:.0f} % of faces of people "
              f"seen once, {b['labels']:,} human labels on {b['people_labelled']:,} people")
    return 0


if __name__ == "__main__":
    sys.exit(main())
