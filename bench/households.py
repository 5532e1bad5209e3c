"""Family photo libraries, synthetic: relatives who look alike, and people photographed from childhood to old age.

Issue 7 measures the product on held-out libraries we never see: 150 families (563 people, every second person
named with 3 photos, so the strangers are mostly relatives) and 82 people photographed from childhood to old age
(named from their 3 oldest photos). Neither exists here, and lfw_dev has no families and no children, so this
benchmark builds both from the behaviour the issue describes, and checks the build against the one thing the issue
measured on them that needs no product: the per-face centroid rule.

* **families**: each family has 3-5 people whose identity centres share a family direction (relatives' centres
  at cosine ``resemblance``, drawn per family); family photos show several of them at once.
* **family_crops**: the same families as a library of tight single-face crops (one face per photo, as issue 7's
  held-out set of 224-px crops is): no family photo, so no rule that reads photos (rule 5's "beside", rule 7's
  photo-mates) can help, and only the faces and the clustering tell relatives apart.
* **ageing**: a person's identity centre drifts with age along a path of their own (the adult face changes
  slowly, ``drift``), and a child's face carries a component every child shares (``childhood``: children look
  alike), fading out by 18.

Faces around a centre are drawn as in ``bench/synthetic.py`` (unit vectors in a space with a decaying spectrum):
good photos at cosine ~0.6 to each other, poor ones (15 %, quality 0.3-0.5) at ~0.4, as on lfw_dev.

The generators' few constants were set so that the centroid rule lands near the figures the issue gives for the
held-out sets (printed beside them); **no rule of the product was tuned here**: the product runs with its
defaults, and the point is what it does where relatives and children are the strangers.

Printed per library (mean over seeds, the same columns as ``bench/quality.py``): ours by automation, ours after
10 and 50 clicks of the review queue answered from the truth (ageing: also 200) (:mod:`face_pipeline.evaluation.answers`), Chinese
Whispers (0.4) with the labels applied the way its products do, and the centroid rule at 0.40, 0.45 and 0.55.
"Unknown named" here are relatives' (or other people's) photos given a named person's name; "wrong known" are a
named person's photos given another named person's name.

Usage: ``PYTHONPATH=. .venv/bin/python bench/households.py [--seeds 0,1,2] [--library families,ageing]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from face_pipeline.evaluation import protocol as P  # noqa: E402
from face_pipeline.evaluation.datasets import LabelledFaces  # noqa: E402
from synthetic import direction_sampler  # noqa: E402

DIM = 512
POOR_SHARE = 0.15
#: What the issue measured with the centroid rule on its held-out sets (threshold → (recall, unknown named rate)).
ISSUE_CENTROID = {
    "families": {0.40: (0.898, 0.087), 0.55: (0.705, 0.022)},
    "ageing": {0.40: (0.570, 0.014), 0.45: (0.495, 0.0)},
}


def _mix(a: np.ndarray, b: np.ndarray, w: np.ndarray | float) -> np.ndarray:
    """Unit rows of sqrt(w) a + sqrt(1 - w) b (a, b unit rows: the result's cosine to a is ~sqrt(w))."""
    w = np.asarray(w, dtype=np.float32).reshape(-1, 1) if np.ndim(w) else np.float32(w)
    x = np.sqrt(w) * a + np.sqrt(1 - w) * b
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _faces(centres: np.ndarray, rng: np.random.Generator, dirs, good: float = 0.62) -> tuple[np.ndarray, np.ndarray]:
    """(faces, quality) around ``centres`` (one row per face): good faces at weight ~0.62 on their centre (0.6
    apart), poor ones at ~0.40 with quality 0.3-0.5 (the quality score follows how well a face shows its person)."""
    m = len(centres)
    poor = rng.random(m) < POOR_SHARE
    w = np.where(poor, rng.uniform(0.55, 0.72, m) * good, np.clip(rng.normal(good, 0.08), 0.3, 0.85))
    q = np.where(poor, rng.uniform(0.3, 0.5, m), np.clip(0.5 + (w - good + 0.17) * 1.2 + rng.normal(0, 0.05, m), 0.5, 0.95))
    return _mix(centres, dirs(m), w), q


def _library(name: str, X, q, ident: list[str], photo: np.ndarray) -> LabelledFaces:
    n = len(X)
    return LabelledFaces(name=name, X=np.asarray(X, np.float32), norms=np.ones(n, np.float32), det_score=np.ones(n, np.float32),
                         quality=np.asarray(q, np.float64), identity=np.array(ident, dtype=object), photo=np.asarray(photo, np.int64),
                         labelled=np.ones(n, bool), bbox=np.zeros((n, 4), np.float32), photo_paths=[])


def _deal_photos(people: np.ndarray, rng: np.random.Generator, first: int, group_share: float) -> np.ndarray:
    """Photo ids for faces of ``people`` (one entry per face): a share of faces goes into group photos of 2-4
    faces, never two of one person in a photo; the rest are photos of their own."""
    n = len(people)
    photo = np.empty(n, np.int64)
    order = rng.permutation(n)
    pid, members, want = first, set(), 1
    for i in order:
        if len(members) >= want or people[i] in members:
            pid += 1
            members, want = set(), (int(rng.integers(2, 5)) if rng.random() < group_share else 1)
        members.add(int(people[i]))
        photo[i] = pid
    return photo


def families(seed: int, n_families: int = 150, resemblance: tuple[float, float] = (0.0, 0.75), good: float = 0.55, spread: float = 0.12,
             group_share: float = 0.5) -> tuple[LabelledFaces, list[list[int]]]:
    """(library, people of each family as face-identity indices). Relatives' centres at cosine ~U(resemblance);
    ``group_share`` of the faces are in family photos (0: every face a photo of its own, a library of crops)."""
    rng = np.random.default_rng(seed)
    dirs, _ = direction_sampler(rng, DIM, 0.7)
    X, q, ident, photo, fams, next_photo = [], [], [], [], [], 0
    person = 0
    for f in range(n_families):
        size = int(rng.choice([3, 4, 5], p=[0.4, 0.45, 0.15]))
        base = dirs(1)[0]
        r = rng.uniform(*resemblance)
        centres = _mix(np.repeat(base[None], size, 0), dirs(size), r)
        counts = np.minimum(5 + rng.geometric(0.08, size), 60)
        who = np.repeat(np.arange(size), counts)
        x, qq = _faces(centres[who], rng, dirs, np.clip(rng.normal(good, spread, size), 0.3, 0.8)[who])
        ph = _deal_photos(who, rng, next_photo, group_share=group_share)
        next_photo = int(ph.max()) + 1
        X.append(x), q.append(qq), photo.append(ph)
        ident += [f"family{f:03d}_person{k}" for k in who]
        fams.append(list(range(person, person + size)))
        person += size
    return _library("families" if group_share else "family_crops", np.vstack(X), np.concatenate(q), ident, np.concatenate(photo)), fams


def ageing(seed: int, n_people: int = 82, childhood: float = 0.8, drift: float = 1.8, good: float = 0.55,
           lookalike: float = 0.55) -> LabelledFaces:
    """People photographed at ages 1-80. Centre at age t: a child component shared by all children, weight
    ``childhood`` at birth fading to 0 at 18, mixed into an adult face that turns by ``drift`` radians from
    youth to old age along a path of the person's own."""
    rng = np.random.default_rng(seed)
    dirs, _ = direction_sampler(rng, DIM, 0.7)
    child = dirs(1)[0]
    looks = dirs(max(1, n_people // 3))  # people of one look share a direction (weight up to ``lookalike``)
    X, q, ident, photo, next_photo = [], [], [], [], 0
    for p in range(n_people):
        m = int(rng.integers(20, 45))
        ages = np.sort(rng.uniform(1, 80, m))
        a0, a1 = dirs(2)
        a1 = a1 - (a1 @ a0) * a0
        a1 /= np.linalg.norm(a1)
        phi = drift * (ages / 80.0)[:, None]
        adult = _mix(np.repeat(looks[rng.integers(len(looks))][None], m, 0), np.cos(phi) * a0 + np.sin(phi) * a1,
                     rng.uniform(0, lookalike))
        c = childhood * np.clip(1 - ages / 18.0, 0, 1)
        centres = _mix(np.repeat(child[None], m, 0), adult, c)
        x, qq = _faces(centres, rng, dirs, good)
        X.append(x), q.append(qq)
        ident += [f"person{p:03d}_age{int(a):02d}" for a in ages]
        photo.append(np.arange(next_photo, next_photo + m))
        next_photo += m
    d = _library("ageing", np.vstack(X), np.concatenate(q), ident, np.concatenate(photo))
    d.age = np.array([float(s.split("_age")[1]) for s in ident])  # type: ignore[attr-defined]
    d.identity = np.array([s.split("_age")[0] for s in ident], dtype=object)
    return d


def split_every_second(d: LabelledFaces, seed: int, k: int = 3, oldest: bool = False) -> P.Split:
    """Every second person named (by sorted name), ``k`` labelled photos each: random ones, or their oldest."""
    rng = np.random.default_rng(seed + 1000)
    names = sorted(set(d.identity.tolist()))
    named = names[::2]
    human = np.full(len(d), -1, np.int64)
    for p, name in enumerate(named):
        rows = np.flatnonzero(d.identity == name)
        pick = rows[np.argsort(-d.age[rows])[:k]] if oldest else rng.choice(rows, size=min(k, len(rows)), replace=False)
        human[pick] = p
    return P.Split(seed, k, 0.5, named, human)


#: Clicks of the review queue answered. Ageing also 200: a person's chain across the years is asked one step per
#: organise, so what the chain questions reach shows only after many rounds.
ANSWER_BUDGETS = {"ageing": (10, 50, 200)}
DEFAULT_BUDGETS = (10, 50)
CENTROID = (0.40, 0.45, 0.55)
HEAD = (f"{'method':<30}{'knownP':>8}{'knownR':>8}{'R <18':>7}{'unknown named':>15}{'rate':>8}{'wrong known':>12}"
        f"{'uB3 F':>7}{'clicks':>7}")


def _row(d: LabelledFaces, sp: P.Split, person: np.ndarray, groups: np.ndarray, clicks: float = 0.0) -> dict:
    r = P.score("", d, sp, person, groups, 0.0)
    named = np.array(sp.people + [None], dtype=object)[np.where(person >= 0, person, len(sp.people))]
    auto = (person >= 0) & (sp.human < 0)
    known = np.isin(d.truth, sp.people)
    young = getattr(d, "age", np.full(len(d), 99.0)) < 18
    want = known & (sp.human < 0) & young
    return {"knownP": r.known_p, "knownR": r.known_r, "R <18": float((want & (named == d.truth)).sum() / max(1, want.sum())),
            "unknown": r.strangers_named, "rate": r.stranger_rate, "wrong known": int((auto & known & (named != d.truth)).sum()),
            "uB3 F": r.unk_b3_f, "clicks": clicks}


def _centroid(d: LabelledFaces, sp: P.Split, t: float) -> tuple[np.ndarray, np.ndarray]:
    """(person, groups) of the per-face centroid rule at ``t`` (:func:`protocol.centroid_best`); it groups nobody."""
    best, best_s = P.centroid_best(d, sp)
    return np.where(sp.human >= 0, sp.human, np.where(best_s >= t, best, -1)), np.full(len(d), -1)


def evaluate(name: str, seeds) -> None:
    from face_pipeline.core.naming import FINE_LINK, unknown_groups
    from face_pipeline.evaluation.anchors import ANCHORS
    from face_pipeline.evaluation.answers import answer_queue

    rows: dict[str, list[dict]] = {}
    for seed in seeds:
        if name in ("families", "family_crops"):
            d, _ = families(seed, group_share=0.5 if name == "families" else 0.0)
            sp = split_every_second(d, seed)
        else:
            d = ageing(seed)
            sp = split_every_second(d, seed, oldest=True)
        coarse, _ = P.cluster_everyone(d)
        fine, _ = P.cluster_everyone(d, threshold=FINE_LINK)
        person, groups, _, _ = P.run_ours(d, sp, coarse, fine=fine)
        rows.setdefault("ours", []).append(_row(d, sp, person, groups))
        for budget in ANSWER_BUDGETS.get(name, DEFAULT_BUDGETS):
            res, a = answer_queue(d, sp, lambda s, rej, cl: P.run_ours(d, s, coarse, fine=fine, rejected=rej, cannot_link=cl)[3], budget)
            rows.setdefault(f"ours + {budget} answers", []).append(
                _row(d, a.split, res.person, unknown_groups(coarse, res.person, min_size=2), a.answers))
        cw = next(k for k in ANCHORS if k.startswith("chinese whispers cos>0.4"))
        rows.setdefault(cw, []).append(_row(d, sp, *P.run_anchor(d, sp, ANCHORS[cw](d.X))))
        for t in CENTROID:
            rows.setdefault(f"centroid >= {t:.2f}", []).append(_row(d, sp, *_centroid(d, sp, t)))
    print(f"\n=== {name} ({len(seeds)} seeds; {len(d)} faces, {len(set(d.identity.tolist()))} people, "
          f"{len(sp.people)} named with 3 photos{' (their oldest)' if name == 'ageing' else ''}) ===")
    print(HEAD)
    for method, rs in rows.items():
        m = {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}
        worst = max(r["unknown"] for r in rs)
        print(f"{method:<30}{m['knownP']:>8.4f}{m['knownR']:>8.4f}{m['R <18']:>7.3f}{m['unknown']:>9.1f}/{worst:<5}"
              f"{m['rate']:>8.3%}{m['wrong known']:>12.1f}{m['uB3 F']:>7.3f}{m['clicks']:>7.1f}")
    print("issue 7's held-out set, centroid rule: " + ", ".join(f">= {t:.2f}: recall {r:.3f}, {s:.1%} named wrongly"
                                                                 for t, (r, s) in ISSUE_CENTROID[name.replace("family_crops", "families")].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--library", default="families,family_crops,ageing")
    a = ap.parse_args()
    for name in a.library.split(","):
        evaluate(name, [int(x) for x in a.seeds.split(",")])


if __name__ == "__main__":
    main()
