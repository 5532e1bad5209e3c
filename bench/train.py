"""Does the projection head help? Raw 512-d ArcFace vs the trained head on the real dev faces.

Run: ``.venv/bin/python bench/train.py [--data /tmp/faces_dev_emb.npz] [--seeds 0,1,2] [--mining batch_hard]``

Uses exactly the production gate path (``face_pipeline.core.train.run_gate``), so what is printed here is what
the gate decides on. Labelled (centre) faces only. Per seed, half of the people are never seen by the head;
of the other half, some faces are held out as test faces, a few people and faces are kept for threshold
calibration (out-of-sample for the head, see ``run_gate``), and the rest train the head. Each space gets its
own calibrated thresholds. Printed side by side, with projected/raw ratios:

(a) held-out faces of the trained people: assignment precision/recall (alone and with strangers mixed in),
    BCubed F of clustering them;
(b) people never seen: BCubed F of clustering them, how many of their faces got a (wrong) name, and
    assignment precision/recall once each of them has 3 labelled faces (labelled after training).

Then training throughput, on the dev data and on a larger synthetic set (the dev set is too small to time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from face_pipeline.core.train import TrainConfig, run_gate, train_projection_head  # noqa: E402
from face_pipeline.settings import get_settings  # noqa: E402

ROWS = [
    ("(a) known people, held-out faces", None),
    ("assign precision (no strangers)", "known_precision"),
    ("assign recall", "known_recall"),
    ("assign precision (+ strangers)", "precision"),
    ("BCubed F (clustering them)", "known_bcubed_f"),
    ("(b) people never seen", None),
    ("BCubed F (clustering them)", "bcubed_f"),
    ("strangers given a name (rate)", "unseen_false_rate"),
    ("new-label assign precision", "new_people_precision"),
    ("new-label assign recall", "new_people_recall"),
    ("thresholds", None),
    ("assign threshold", "threshold"),
    ("cluster threshold", "cluster_threshold"),
]


def fmt(v) -> str:
    return "   n/a" if v is None else f"{v:6.3f}"


def ratio(raw, proj) -> str:
    if raw is None or proj is None:
        return "   n/a"
    if raw == 0:
        return "   inf" if proj > 0 else "  1.00"
    return f"{proj / raw:6.2f}"


def print_table(raw: dict, prod: dict, proj: dict) -> None:
    print(f"  {'':36s} {'raw':>6s} {'raw@set':>7s} {'proj':>6s} {'ratio':>6s} {'r@set':>6s}")
    for name, key in ROWS:
        if key is None:
            print(f"  {name}")
            continue
        r, q, p = raw.get(key), prod.get(key), proj.get(key)
        print(f"    {name:34s} {fmt(r)} {fmt(q):>7s} {fmt(p)} {ratio(r, p)} {ratio(q, p)}")


def synthetic_throughput(mining: str) -> tuple[float, float, int]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, 512))
    y = np.repeat(np.arange(100), 20)
    X = (centres[y] + rng.normal(size=(len(y), 512)) * 1.5).astype(np.float32)
    r = train_projection_head(X, y.tolist(), TrainConfig(epochs=10, mining=mining))
    return r.triplets_per_second, r.seconds, r.triplets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/faces_dev_emb.npz")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--mining", default="batch_hard", choices=["batch_hard", "semi_hard"])
    args = ap.parse_args()

    d = np.load(args.data, allow_pickle=True)
    keep = d["is_labelled"].astype(bool)
    X = d["emb"][keep].astype(np.float32)
    people = d["person"][keep].tolist()
    photos = d["image"][keep].tolist()
    print(f"data: {len(people)} labelled faces, {len(set(people))} people, {len(set(photos))} photos ({args.data})")
    print(f"head: 512->256->ReLU->128, triplet margin 0.2, {args.mining}, {args.epochs} epochs, PK 32x4\n")

    # warm-up so one-off torch start-up costs do not land in the first timing
    train_projection_head(X[:40], people[:40], TrainConfig(epochs=1))

    settings = get_settings()
    print(
        f"raw@set: raw space at the production settings (assign {settings.person_match_threshold}, "
        f"cluster {settings.unknown_threshold}); ratio = proj/raw, r@set = proj/raw@set\n"
    )
    per_seed = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        cfg = TrainConfig(epochs=args.epochs, mining=args.mining, seed=seed)
        t0 = time.perf_counter()
        report, head = run_gate(X, people, cfg, groups=photos, holdout_people_frac=0.5)
        total = time.perf_counter() - t0
        # the same split and head (seeded), but raw at the production settings: what actually runs today
        report_prod, _ = run_gate(
            X, people, cfg, groups=photos, holdout_people_frac=0.5,
            raw_threshold=settings.person_match_threshold, raw_cluster_threshold=settings.unknown_threshold,
        )
        raw, proj, prod = report.raw, report.projected, report_prod.raw
        print(
            f"=== seed {seed}: head trained on {head.people} people / {head.faces} faces; "
            f"{proj['calibration_faces']} faces kept out for calibrating the head's thresholds; "
            f"{raw['known_faces']} held-out faces of trained people; "
            f"{raw['unseen_people']} people ({raw['unseen_faces']} faces) never seen"
        )
        print(
            f"  training {head.seconds:.2f}s, {head.triplets} triplets, {head.triplets_per_second:,.0f} triplets/s; "
            f"loss {head.losses[0]:.4f} -> {head.final_loss:.4f}; whole gate run {total:.1f}s"
        )
        print_table(raw, prod, proj)
        print(f"  gate vs raw calibrated the same way: {'PROMOTE' if report.promoted else 'REFUSE'}")
        for line in report.reasons[1:]:
            print(f"    - {line}")
        print(f"  gate vs raw at the production settings: {'PROMOTE' if report_prod.promoted else 'REFUSE'}")
        print()
        per_seed.append((report, report_prod))

    print(f"=== summary over {len(per_seed)} seeds (mean raw -> raw@settings -> projected)")
    section = ""
    for name, key in ROWS:
        if key is None:
            section = name[:3]
            continue
        if key.endswith("threshold"):
            continue
        cols = []
        for pick in (lambda r: r[0].raw, lambda r: r[1].raw, lambda r: r[0].projected):
            vals = [pick(r)[key] for r in per_seed if pick(r).get(key) is not None]
            cols.append(statistics.mean(vals) if vals else None)
        print(f"    {section} {name:34s} {fmt(cols[0])} -> {fmt(cols[1])} -> {fmt(cols[2])}")
    print(
        f"  gate promoted the head in {sum(r[0].promoted for r in per_seed)}/{len(per_seed)} seeds against raw "
        f"calibrated the same way, {sum(r[1].promoted for r in per_seed)}/{len(per_seed)} against raw at the settings"
    )

    unseen = [(r[0].raw[k], r[0].projected[k]) for r in per_seed for k in ("bcubed_f", "new_people_recall", "new_people_precision")]
    if any(p is not None and r is not None and p < r for r, p in unseen):
        print(
            "  PLAINLY: training does NOT help people the head never saw on this data. Clustering them and "
            "assigning them once labelled both get worse; only the trained people's held-out faces gain. "
            "The gate keeps such a head out."
        )
    else:
        print("  the head did not hurt people it never saw in any seed.")

    tps, secs, n = synthetic_throughput(args.mining)
    print(
        f"\nthroughput (synthetic 100 people x 20 faces, 10 epochs, batch 128, 1 CPU thread): "
        f"{tps:,.0f} triplets/s ({n} triplets in {secs:.2f}s)"
    )


if __name__ == "__main__":
    main()
