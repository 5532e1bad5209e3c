"""Latency of the suggestion queue on a library of realistic size: what organise pays to store its questions, and
what a page pays to show and answer them.

A synthetic library in real SQL (the queue needs no vectors): ``--faces`` faces in photos of 1-3 faces, ``--people``
named people with a few human labels each, the rest in unknown clusters of 3-40 faces. ``--suggestions``
questions: 60 % "are these faces X?" (a whole cluster), 30 % "is this X?" (one face), 10 % "the same person?"
(two groups, or two people). Timings are medians of ``--repeat`` runs (store: one run each, first and again).

Usage: .venv/bin/python bench/suggestions.py [--faces 20000] [--suggestions 2000] [--pg]
  --pg: also on a fresh PostgreSQL database at 127.0.0.1:5432 (dropped afterwards).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

from face_pipeline.core import suggestions as sg  # noqa: E402
from face_pipeline.core.db import get_engine, session_scope, upgrade  # noqa: E402
from face_pipeline.core.db.schema import FaceInstance, Person, Photo, PhotoBatch  # noqa: E402
from face_pipeline.core.suggestions import Suggestion  # noqa: E402
from face_pipeline.settings import Settings  # noqa: E402


def build(settings: Settings, n_faces: int, n_people: int, n_suggestions: int, seed: int = 0) -> list[Suggestion]:
    rng = random.Random(seed)
    upgrade(settings.sql_url)
    persons = [f"person_{uuid.UUID(int=rng.getrandbits(128)).hex}" for _ in range(n_people)]
    faces, photos, image = [], [], 0
    while len(faces) < n_faces:
        image_id = f"{image:016x}"
        photos.append(dict(batch="b", path=f"/photos/{image_id}.jpg", rel_path=f"{image_id}.jpg", image_id=image_id, status="ok", faces=1))
        for k in range(rng.choice((1, 1, 2, 3))):
            faces.append(dict(face_id=f"{image_id}_face{k}", image_id=image_id, batch="b", face_index=k, x1=0.0, y1=0.0, x2=80.0,
                              y2=100.0, landmarks=[[0.0, 0.0]] * 5, det_score=0.9, quality_score=rng.random(), embedded=False))
        image += 1
    faces = faces[:n_faces]
    labelled = 0
    for p in persons:  # 3 human labels each
        for f in faces[labelled : labelled + 3]:
            f.update(person_id=p, cluster_id=p, assignment_source="manual", person_confidence=1.0)
        labelled += 3
    rest = faces[labelled:]
    clusters: list[list[str]] = []
    i = 0
    while i < len(rest):
        size = rng.randint(3, 40)
        cid = f"unknown_cluster_{len(clusters) + 1}"
        for f in rest[i : i + size]:
            f["cluster_id"] = cid
        clusters.append([f["face_id"] for f in rest[i : i + size]])
        i += size
    with session_scope(settings.sql_url) as s:
        s.add(PhotoBatch(name="b", source_dir="/photos"))
        s.flush()
        s.add_all(Person(person_id=p, name=f"Person {k}") for k, p in enumerate(persons))
        s.flush()
        for chunk in range(0, len(photos), 5000):
            s.execute(insert(Photo), photos[chunk : chunk + 5000])
        for chunk in range(0, len(faces), 5000):
            s.execute(insert(FaceInstance), faces[chunk : chunk + 5000])
    out = []
    for k in range(n_suggestions):
        c = clusters[k % len(clusters)]
        bar, score = 0.40, rng.uniform(0.25, 0.40)
        r = k % 10
        if r < 6:
            out.append(Suggestion("cluster_is_person", tuple(c), person_id=rng.choice(persons), score=score, bar=bar,
                                  cluster_id=f"unknown_cluster_{k % len(clusters) + 1}"))
        elif r < 9:
            out.append(Suggestion("face_is_person", (rng.choice(c),), person_id=rng.choice(persons), score=score, bar=bar))
        elif k % 20 == 9:
            d = clusters[(k + 1) % len(clusters)]
            out.append(Suggestion("same_person", tuple(c), other_face_ids=tuple(d), score=score, bar=bar))
        else:
            p, q = rng.sample(persons, 2)
            out.append(Suggestion("same_person", (), person_id=p, other_person_id=q, score=score, bar=bar))
    return out


def timed(fn, repeat: int = 1) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def run(settings: Settings, args, backend: str) -> list[tuple]:
    questions = build(settings, args.faces, args.people, args.suggestions)

    def store(qs):
        with session_scope(settings.sql_url) as s:
            return sg.replace_pipeline_suggestions(s, qs)

    rows = []
    rows.append((backend, f"store {len(questions)} questions (organise, first run)", timed(lambda: store(questions))))
    rows.append((backend, "store the same list again (no change)", timed(lambda: store(questions))))
    rows.append((backend, "store with 10 % replaced", timed(lambda: store(questions[: len(questions) * 9 // 10]))))
    n = sg.count_suggestions(settings)
    rows.append((backend, f"count open ({n})", timed(lambda: sg.count_suggestions(settings), args.repeat)))
    rows.append((backend, "list first page (50)", timed(lambda: sg.list_suggestions(settings, limit=50), args.repeat)))
    rows.append((backend, "list a page at offset 1000", timed(lambda: sg.list_suggestions(settings, limit=50, offset=1000), args.repeat)))
    first = sg.list_suggestions(settings, limit=1)[0]
    rows.append((backend, f"get one ({first.face_count} faces)", timed(lambda: sg.get_suggestion(settings, first.id), args.repeat)))
    face_q = sg.list_suggestions(settings, kind="face_is_person", limit=args.repeat)
    it = iter(face_q)
    rows.append((backend, "accept 'is this X?' (label_face)", timed(lambda: sg.accept_suggestion(settings, next(it).id), len(face_q))))
    cluster_q = sg.list_suggestions(settings, kind="cluster_is_person", limit=args.repeat)
    it2 = iter(cluster_q)
    rows.append((backend, "reject 'are these X?' (reject_face each)", timed(lambda: sg.reject_suggestion(settings, next(it2).id), len(cluster_q))))
    get_engine(settings.sql_url).dispose()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=20000)
    ap.add_argument("--people", type=int, default=200)
    ap.add_argument("--suggestions", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pg", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += run(Settings(home=Path(tmp) / "home", database_url=None, qdrant_url=None), args, "sqlite")
        if args.pg:
            import psycopg2

            name = f"fp_bench_{uuid.uuid4().hex[:10]}"
            conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
            conn.autocommit = True
            conn.cursor().execute(f'CREATE DATABASE "{name}"')
            try:
                url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
                rows += run(Settings(home=Path(tmp) / "home_pg", database_url=url, qdrant_url=None), args, "postgresql")
            finally:
                conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.close()
    print(f"\n{args.faces} faces, {args.people} people, {args.suggestions} questions; median of {args.repeat}\n")
    print("| backend | operation | ms |")
    print("|---|---|---|")
    for backend, what, ms in rows:
        print(f"| {backend} | {what} | {ms:.0f} |")


if __name__ == "__main__":
    main()
