"""Does training help the people the user named, without hurting anyone else? Raw vs head, on lfw_dev.

Run: ``nice -n 10 .venv/bin/python bench/train.py [--data lfw_dev] [--seeds 0,1,2] [--fractions 2,10] [--ks 1,3]``

Protocol (per named fraction, label budget K and seed; everything seeded):

* The people a user would name are those with >= 5 photos; ``1/fraction`` of them are named, each with K
  labelled photos (their subject faces). Everybody else - the other people and every background face - is a
  stranger to the library.
* The head (``core.train``: residual, identity at the start, triplet loss on the named people's labels and
  flipped / zoomed / blurred copies of those label crops re-embedded by the product's recogniser, drift
  penalty on every face nobody labelled) is trained on exactly what a user would have given: the labels.
* Naming rule, the same for both columns (``core.train.name_faces``), printed below: each face's cosine to each
  named person's label centroid; raw names the best person at >= the bar (the product's person threshold);
  the head rule only considers people whose *raw* score clears the impostor floor and may re-rank them or name
  a face that clears the floor for exactly one named person when the head's score reaches the bar.
* Unknown people's BCubed F: all stranger faces clustered with the product's clusterer at the product's link
  threshold, in raw space ("raw") and in the head's space ("head sp."). The product clusters in raw space
  unless the gate says the head's space is no worse.
* Gate: the product's own gate (``core.train.run_gate``) run on the labels alone, as ``face-pipeline train``
  would: trained / refused / not_enough_labels.

Augmentation needs the aligned crops, which the cached embeddings do not keep: the bench re-detects the subject
faces of the people who can be named (>= 5 photos) with the product's detector and aligner, and caches the
augmented embeddings under ``.cache/train_augment/``.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from face_pipeline.core import train as T  # noqa: E402
from face_pipeline.evaluation.datasets import REPO, SHARED_DATA, LabelledFaces, load_labelled  # noqa: E402
from face_pipeline.settings import Settings  # noqa: E402

MIN_PHOTOS = 5


def impostor_floor(d: LabelledFaces, q: float = 0.9999) -> tuple[float, float]:
    """(q-quantile, max) of the cosine between subject faces of different people: the model's impostor range."""
    idx = np.flatnonzero(d.labelled)
    X, who = d.X[idx], d.identity[idx]
    codes = np.unique(who, return_inverse=True)[1]
    hist = np.zeros(2001, dtype=np.int64)  # cosine histogram at 0.001 resolution over [-1, 1]
    top = -1.0
    for lo in range(0, len(X), 1024):
        s = X[lo : lo + 1024] @ X.T
        diff = codes[lo : lo + 1024, None] != codes[None, :]
        upper = np.arange(lo, lo + len(s))[:, None] < np.arange(len(X))[None, :]
        v = s[diff & upper]
        top = max(top, float(v.max())) if len(v) else top
        hist += np.bincount(np.clip(np.round((v + 1) * 1000).astype(np.int64), 0, 2000), minlength=2001)
    cdf = np.cumsum(hist) / hist.sum()
    return float(np.searchsorted(cdf, q) / 1000 - 1), top


def augmentation_cache(d: LabelledFaces, rows: np.ndarray, settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    """(augmented embeddings, source row per embedding) for subject faces ``rows`` (4 copies each).

    Re-detects each photo, takes the detected face nearest the cached box, aligns it as ingest does, and embeds
    ``T.augment_crop`` of it. Cached incrementally under ``.cache/train_augment/`` (one file per data set and
    model; faces already there are not redone); a face not found again gets no copies.
    """
    from face_pipeline.core.models import FaceModels, l2_normalize, model_paths
    from face_pipeline.core.photos import load_photo

    det, rec = model_paths(settings)
    key = hashlib.sha256((det.name + rec.name + str(settings.det_size) + ",".join(T.AUGMENTATIONS)).encode()).hexdigest()[:12]
    path = REPO / ".cache" / "train_augment" / f"{d.name}_{key}.npz"
    have_aug, have_src, tried = np.zeros((0, 512), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    if path.exists():
        z = np.load(path)
        have_aug, have_src, tried = z["aug"], z["source"], z["tried"]
    todo = np.setdiff1d(rows, tried)
    if len(todo):
        models = FaceModels(settings)
        folder = SHARED_DATA / d.name
        aug, source, lost, agree = [have_aug], [have_src], 0, []
        t0 = time.perf_counter()

        def save(done: np.ndarray) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, aug=np.concatenate(aug).astype(np.float32), source=np.concatenate(source).astype(np.int64),
                     tried=np.union1d(tried, done))
            tmp.replace(path)

        for n, r in enumerate(todo):
            decoded = load_photo(folder / d.photo_paths[int(d.photo[r])], settings.max_image_pixels)
            img = decoded.bgr if hasattr(decoded, "bgr") else decoded.image
            faces = models.detect(img)
            if faces:
                centre = (d.bbox[r, :2] + d.bbox[r, 2:]) / 2
                f = min(faces, key=lambda f: float(np.hypot(*(np.add(f.bbox[:2], f.bbox[2:]) / 2 - centre))))
                crop = models.align(img, f.landmarks)
                emb = l2_normalize(models.embed([crop] + T.augment_crop(crop)))
                agree.append(float(emb[0] @ d.X[r]))
                aug.append(emb[1:])
                source.append(np.full(len(emb) - 1, int(r), dtype=np.int64))
            else:
                lost += 1
            if (n + 1) % 100 == 0:
                save(todo[: n + 1])
                print(f"  augmenting {d.name}: {n + 1}/{len(todo)} faces, {time.perf_counter() - t0:.0f}s", flush=True)
        save(todo)
        print(f"  augmented {len(todo) - lost}/{len(todo)} new faces ({lost} not re-detected); re-embedded crop vs "
              f"cached vector: min cosine {min(agree) if agree else float('nan'):.4f}")
        z = np.load(path)
        have_aug, have_src = z["aug"], z["source"]
    keep = np.isin(have_src, rows)
    return have_aug[keep], have_src[keep]


def choose_labels(d: LabelledFaces, truth: np.ndarray, frac: int, k: int, seed: int) -> tuple[list, np.ndarray]:
    """(named people, label rows). Nested by design, so budgets compare like with like: for one seed the 1/10
    named are a subset of the 1/2 named, and a person's K=1 label is the first of their K=3 labels."""
    rng = np.random.default_rng(seed)
    subj = np.flatnonzero(d.labelled)
    ident = d.identity
    counts: dict = {}
    for i in subj:
        counts[ident[i]] = counts.get(ident[i], 0) + 1
    eligible = sorted(p for p, n in counts.items() if n >= MIN_PHOTOS)
    order = [eligible[i] for i in rng.permutation(len(eligible))]
    named = sorted(order[: max(2, round(len(eligible) / frac))])
    label_rows = []
    for p in named:
        rows = [int(i) for i in subj if ident[i] == p]
        picks = np.random.default_rng([seed, len(p), sum(map(ord, p))]).permutation(rows)
        label_rows.extend(int(r) for r in picks[:k])
    return named, np.array(sorted(label_rows), dtype=np.int64)


def one_run(d, truth, A, A_src, frac, k, seed, settings, floor, cfg_over) -> dict:
    named, label_rows = choose_labels(d, truth, frac, k, seed)
    named_set = set(named)
    is_label = np.zeros(len(d), dtype=bool)
    is_label[label_rows] = True
    queries = np.flatnonzero(~is_label)
    q_truth = truth[queries]
    known_q = np.array([t in named_set for t in q_truth])
    y_lab = truth[label_rows].tolist()

    t0 = time.perf_counter()
    keep_aug = np.isin(A_src, label_rows)
    aug_X, aug_ids = A[keep_aug], truth[A_src[keep_aug]].tolist()
    cfg = T.TrainConfig(seed=seed, **cfg_over)
    head = T.train_projection_head(d.X[label_rows], y_lab, cfg, augmented=aug_X, augmented_ids=aug_ids,
                                   unlabelled=d.X[queries])
    train_s = time.perf_counter() - t0
    fn = lambda V: T.project(head.state_dict, V)  # noqa: E731

    out: dict = {"named": len(named), "labels": len(label_rows), "aug": int(keep_aug.sum()), "train_s": train_s}
    bar = settings.person_match_threshold
    lowq = (d.quality[queries] < T.LOW_QUALITY) & known_q
    for tag, pf in (("raw", None), ("head", fn)):
        m = T.evaluate_naming(d.X[label_rows], y_lab, d.X[queries], q_truth.tolist(), raw_bar=bar, raw_floor=floor, project_fn=pf)
        named_q = m["named"]
        known_named = [n for n, kq in zip(named_q, known_q) if kq and n is not None]
        known_correct = sum(n == t for n, t, kq in zip(named_q, q_truth, known_q) if kq and n is not None)
        out[f"{tag}_known_p"] = known_correct / len(known_named) if known_named else 1.0
        out[f"{tag}_known_r"] = m["recall"]
        out[f"{tag}_strangers"] = m["strangers_named"]
        out[f"{tag}_stranger_rate"] = m["stranger_rate"]
        out[f"{tag}_lowq_r"] = (sum(named_q[i] == q_truth[i] for i in np.flatnonzero(lowq)) / lowq.sum()) if lowq.sum() else None
    out["known_q"], out["strangers_q"], out["lowq_n"] = int(known_q.sum()), int((~known_q).sum()), int(lowq.sum())

    unknown = queries[~known_q]
    g = d.photo[unknown]
    raw_lab = T._cluster_labels(d.X[unknown], settings.unknown_threshold, g, seed)
    head_lab = T._cluster_labels(fn(d.X[unknown]), settings.unknown_threshold, g, seed)
    out["raw_bcubed"] = T._bcubed_of_clustering(truth[unknown].tolist(), raw_lab)["bcubed_f"]
    out["head_bcubed"] = T._bcubed_of_clustering(truth[unknown].tolist(), head_lab)["bcubed_f"]

    # the product's gate, on the labels alone
    src_pos = {int(r): j for j, r in enumerate(label_rows)}
    try:
        rep, _ = T.run_gate(d.X[label_rows], y_lab, cfg, groups=d.photo[label_rows].tolist(), quality=d.quality[label_rows],
                            augmented=aug_X, augmented_source=[src_pos[int(s)] for s in A_src[keep_aug]],
                            unlabelled=d.X[queries], raw_bar=bar, raw_floor=floor, cluster_threshold=settings.unknown_threshold)
        out["gate"] = "trained" if rep.promoted else "refused"
        out["gate_why"] = rep.failing[:2] if not rep.promoted else []
        out["gate_cluster"] = rep.use_for_clustering
    except T.NotEnoughLabels as exc:
        out["gate"], out["gate_why"], out["gate_cluster"] = "not_enough_labels", exc.missing[:1], False
    out["bcubed_as_used"] = out["head_bcubed"] if out["gate_cluster"] else out["raw_bcubed"]
    return out


def f3(v) -> str:
    return "  n/a" if v is None else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="lfw_dev")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fractions", default="2,10", help="named fraction 1/F of people with >= 5 photos")
    ap.add_argument("--ks", default="1,3")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--drift-weight", type=float, default=None)
    args = ap.parse_args()

    settings = Settings(home=REPO / ".cache" / "unused_home")
    d = load_labelled(args.data)
    truth = d.truth
    floor, top = impostor_floor(d)
    print(f"data: {args.data}: {len(d)} faces, {int(d.labelled.sum())} subject faces, {len(set(d.identity[d.labelled]))} people")
    print(f"impostor range of this model on {args.data} (subject faces of different people): 99.99th pct {floor:.3f}, max {top:.3f}")
    bar = settings.person_match_threshold
    print(
        "naming rule (both columns): cosine of a face to each named person's label centroid.\n"
        f"  raw : the best person if cosine >= {bar:.2f} (settings.person_match_threshold)\n"
        f"  head: candidates = named people with raw cosine >= {floor:.3f} (impostor floor); if raw names someone, the\n"
        f"        head picks among the candidates (its best if head score >= {bar:.2f}, else raw's); if raw names nobody,\n"
        f"        name only when exactly one candidate and its head score >= {bar:.2f}\n"
        f"unknown BCubed F: every stranger face clustered by cluster_faces(graph, link {settings.unknown_threshold:.2f}, photo groups)"
    )
    fracs = [int(f) for f in args.fractions.split(",")]
    ks = [int(x) for x in args.ks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    needed = np.unique(np.concatenate([choose_labels(d, truth, f, k, s)[1] for f in fracs for k in ks for s in seeds]))
    A, A_src = augmentation_cache(d, needed, settings)
    can_name = needed
    cfg_over = {k: v for k, v in {"epochs": args.epochs, "drift_weight": args.drift_weight}.items() if v is not None}
    print(f"head: {T.TrainConfig(**cfg_over)}\n")
    T.train_projection_head(d.X[can_name[:40]], d.identity[can_name[:40]].tolist(), T.TrainConfig(epochs=1))  # warm-up

    header = ("| named | K | seed | named people | known P raw→head | known R raw→head | low-q R raw→head (n) | "
              "strangers named raw→head (rate) | unknown BCubed F raw / head sp. / as used | gate | train s |")
    print(header)
    print("|" + "---|" * 11)
    summary: dict = {}
    for frac in fracs:
        for k in ks:
            for seed in seeds:
                r = one_run(d, truth, A, A_src, frac, k, seed, settings, floor, cfg_over)
                summary.setdefault((frac, k), []).append(r)
                print(
                    f"| 1/{frac} | {k} | {seed} | {r['named']} | {f3(r['raw_known_p'])}→{f3(r['head_known_p'])} | "
                    f"{f3(r['raw_known_r'])}→{f3(r['head_known_r'])} | {f3(r['raw_lowq_r'])}→{f3(r['head_lowq_r'])} ({r['lowq_n']}) | "
                    f"{r['raw_strangers']}→{r['head_strangers']} ({r['raw_stranger_rate']:.4%}→{r['head_stranger_rate']:.4%}) | "
                    f"{r['raw_bcubed']:.4f} / {r['head_bcubed']:.4f} / {r['bcubed_as_used']:.4f} | {r['gate']} | {r['train_s']:.1f} |",
                    flush=True,
                )
                if r["gate_why"]:
                    print(f"|   | | | gate: {'; '.join(r['gate_why'])} | | | | | | | |")

    print("\nmean over seeds")
    print("| named | K | known R raw→head | Δ | low-q R raw→head | strangers named raw→head (sum) | known P raw→head | unknown BCubed F Δ (head sp.) | Δ as used | gates |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    verdict = []
    for (frac, k), rs in summary.items():
        m = lambda key: statistics.mean(r[key] for r in rs if r[key] is not None) if any(r[key] is not None for r in rs) else None  # noqa: E731
        dr = m("head_known_r") - m("raw_known_r")
        db = m("head_bcubed") - m("raw_bcubed")
        du = m("bcubed_as_used") - m("raw_bcubed")
        sraw, shead = sum(r["raw_strangers"] for r in rs), sum(r["head_strangers"] for r in rs)
        gates = ", ".join(f"{g}×{sum(r['gate'] == g for r in rs)}" for g in ("trained", "refused", "not_enough_labels") if any(r["gate"] == g for r in rs))
        print(f"| 1/{frac} | {k} | {f3(m('raw_known_r'))}→{f3(m('head_known_r'))} | {dr:+.4f} | {f3(m('raw_lowq_r'))}→{f3(m('head_lowq_r'))} | "
              f"{sraw}→{shead} | {f3(m('raw_known_p'))}→{f3(m('head_known_p'))} | {db:+.4f} | {du:+.4f} | {gates} |")
        verdict.append((frac, k, dr, shead - sraw, m("head_known_p") - m("raw_known_p")))
    print("\nplainly:")
    for frac, k, dr, ds, dp in verdict:
        helps = dr > 0.0005 and ds <= 0 and dp >= -1e-9
        print(f"  named 1/{frac}, K={k}: " + (
            f"the head HELPS: known recall {dr:+.4f}, strangers named {ds:+d}, known precision {dp:+.4f}" if helps else
            f"the head does NOT help: known recall {dr:+.4f}, strangers named {ds:+d}, known precision {dp:+.4f}"))


if __name__ == "__main__":
    main()
