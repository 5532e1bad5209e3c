"""Where an anchor's B³ lead comes from, and what the rules that close it do on the realistic library.

Issue 7 asks for ours >= every anchor on B³ F on lfw_dev and on faces_dev. Sparse HDBSCAN led on faces_dev (0.997
against 0.980-0.991) until clustering placed poor faces by their group. This script takes the lead apart on the
same cached embeddings (``PYTHONPATH=. .venv/bin/python bench/anchor_gap.py``; default: faces_dev and lfw_dev,
HDBSCAN):

1. **Nobody named**: the people whom the anchor keeps together more than ours, face by face, with ours clustering
   by links only (the product before the poor-face placement): quality, best link into the person's largest group
   of ours, best link to a face of anyone else.
2. **Labels present**: per budget, mean over the seeds, B³ F of ours, of the anchor naming clusters as its product
   would, and of the anchor with the names withheld that naming rule 3 forbids (a face whose own score to the
   person's labels lies inside the model's impostor range), with how many names that withholds.
3. **Nobody named, the clustering rules**, B³ F over all faces and over subject faces only (LFW records no identity
   for background faces, so "all faces" counts every background face as a person of its own, even where one man
   stands behind many subjects): links only; the shipped placement of poor faces
   (:func:`face_pipeline.core.clustering.methods._join_poor_groups` and ``_join_lone_poor_faces``); the same group
   rule without its quality condition (any group joins the one group two of its faces link to); plain Chinese
   Whispers (cos > 0.4) and the anchor. The faces the shipped rules moved are listed.
4. **Brothers** (synthetic, issue 7's numbers: 40 good photos each, 0.62 mean cosine within a brother, 0.30
   across): how often each group rule merges the two brothers. This is why only groups of poor faces may join.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from face_pipeline.core import assign as assign_mod  # noqa: E402
from face_pipeline.core.cluster import cluster_faces  # noqa: E402
from face_pipeline.core.clustering.methods import ATTACH_MARGIN, CW_ATTACH_DROP, _compact  # noqa: E402
from face_pipeline.core.clustering.neighbours import neighbour_graph  # noqa: E402
from face_pipeline.core.naming import bars_for, unknown_groups  # noqa: E402
from face_pipeline.evaluation import protocol as P  # noqa: E402
from face_pipeline.evaluation.anchors import ANCHORS  # noqa: E402
from face_pipeline.evaluation.datasets import load_labelled  # noqa: E402
from face_pipeline.evaluation.metrics import bcubed_prf  # noqa: E402
from face_pipeline.settings import Settings  # noqa: E402

BARS = bars_for(Settings(home="/nonexistent-unused").model_name)
LINK = P._defaults(P.OursConfig()).threshold


# ------------------------------------------------------------------------------------------ 1. nobody named ----
def differently_grouped(d, ours: np.ndarray, anchor: np.ndarray, show: int) -> None:
    """Per person (subject faces): where the anchor keeps more of them in one group than ours does, face by face
    for the first ``show`` of them; then how many people each method keeps together better."""
    t = d.truth
    subjects = np.flatnonzero(d.labelled)
    largest = lambda L, rows: max(Counter(L[rows][L[rows] >= 0].tolist()).values(), default=0)  # noqa: E731
    anchor_better = ours_better = 0
    for person in sorted(set(t[subjects])):
        rows = subjects[t[subjects] == person]
        if rows.size < 2:
            continue
        a, o = largest(anchor, rows), largest(ours, rows)
        ours_better += o > a
        if a <= o:
            continue
        anchor_better += 1
        if anchor_better > show:
            continue
        print(f"  {person}: ours {dict(Counter(ours[rows].tolist()))}, anchor {dict(Counter(anchor[rows].tolist()))} "
              f"(group -> faces; -1 = in no group)")
        if o == 0:
            continue
        main = Counter(ours[rows][ours[rows] >= 0].tolist()).most_common(1)[0][0]
        home = np.flatnonzero((ours == main) & (t == person))
        others = np.flatnonzero(t != person)
        for i in rows[ours[rows] != main]:
            into = d.X[home] @ d.X[i]
            print(f"    face {i}: quality {d.quality[i]:.2f}, best link into ours' main group {into.max():.3f} "
                  f"({int((into >= BARS.impostor).sum())} of {home.size} above the impostor bar), "
                  f"best link to anyone else {(d.X[others] @ d.X[i]).max():.3f}")
    print(f"  people with >= 2 photos kept more together by the anchor: {anchor_better} (listed: {min(show, anchor_better)}); "
          f"by ours: {ours_better}")


# ------------------------------------------------------------------------------------------ 2. labels ----------
def rule3_withheld(d, sp, anchor: np.ndarray) -> tuple[P.Row, P.Row, int]:
    """The anchor as its product names clusters, and the same with every automatic name inside the impostor range
    (own score to the person's labels < the impostor bar) withheld."""
    person, groups = P.run_anchor(d, sp, anchor)
    plain = P.score("anchor", d, sp, person, groups, 0.0)
    ev = np.flatnonzero(sp.human >= 0)
    protos = assign_mod.build_prototypes(d.X[ev], sp.human[ev].tolist())
    auto = np.flatnonzero((person >= 0) & (sp.human < 0))
    own = assign_mod.person_scores(protos, d.X[auto], "hybrid")[np.arange(auto.size), [protos.person_ids.index(p) for p in person[auto]]]
    inside = auto[own < BARS.impostor]
    kept = person.copy()
    kept[inside] = -1
    return plain, P.score("anchor, rule 3", d, sp, kept, unknown_groups(anchor, kept, min_size=2), 0.0), int(inside.size)


# ------------------------------------------------------------------------------------------ 3. the rules ------
def any_group_joins(labels: np.ndarray, X: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """The shipped group rule without its quality condition: any group joins the one other group that two of its
    faces link to at the link, when its best link there beats every other link of its faces by ATTACH_MARGIN and
    no photo is shared (kNN graph as the product's: k = 50 down to the link - CW_ATTACH_DROP)."""
    idx, sims = neighbour_graph(X, 50, floor=LINK - CW_ATTACH_DROP, seed=0)
    low = sims < LINK - CW_ATTACH_DROP
    idx[low], sims[low] = -1, -np.inf
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        while x in parent:
            x = parent[x]
        return x

    pos = labels >= 0
    for g in np.flatnonzero(np.bincount(labels[pos]) >= 2):
        rows = np.flatnonzero(labels == g)
        nb, s = idx[rows], sims[rows]
        lab = np.where(nb >= 0, labels[np.maximum(nb, 0)], -2)
        outside = (nb >= 0) & (lab != g)
        reach = defaultdict(set)
        for r, c in zip(*np.nonzero(outside & (s >= LINK) & (lab >= 0))):
            reach[int(lab[r, c])].add(int(r))
        targets = [h for h, faces in reach.items() if len(faces) >= 2]
        if len(targets) != 1:
            continue
        h = targets[0]
        best_in = np.where(outside & (lab == h), s, -np.inf).max()
        best_else = np.where(outside & (lab != h), s, -np.inf).max()
        if best_in - best_else < ATTACH_MARGIN or np.intersect1d(photo[rows], photo[labels == h]).size:
            continue
        a, b = root(int(g)), root(int(h))
        if a != b:
            parent[a] = b
    out = labels.copy()
    out[pos] = [root(int(x)) for x in labels[pos]]
    return _compact(out)


def brothers(trials: int = 6) -> None:
    """Part 4: two brothers with issue 7's numbers and 60 other people, all good photos: how often each rule merges
    the brothers (the shipped one cannot: no brother's group is made of poor faces)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from synthetic import direction_sampler

    merged = {"links only": 0, "shipped": 0, "any group joins": 0}
    for trial in range(trials):
        rng = np.random.default_rng(trial)
        dirs, _ = direction_sampler(rng, 512, 0.7)
        a, u = dirs(1)[0], dirs(1)[0]
        u -= (u @ a) * a
        b = 0.5 * a + np.sqrt(0.75) * u / np.linalg.norm(u)  # centres at cosine 0.5: faces across at ~0.30

        def faces(c, m):
            x = np.sqrt(0.62) * c + np.sqrt(0.38) * dirs(m)
            return x / np.linalg.norm(x, axis=1, keepdims=True)

        X = np.vstack([faces(a, 40), faces(b, 40)] + [faces(o, 6) for o in dirs(60)]).astype(np.float32)
        photo = np.arange(len(X))
        runs = {"links only": cluster_faces(X, groups=photo.tolist()),
                "shipped": cluster_faces(X, groups=photo.tolist(), quality=np.ones(len(X)), poor_below=BARS.fine_link_quality)}
        runs["any group joins"] = any_group_joins(runs["links only"], X, photo)
        for k, L in runs.items():
            merged[k] += bool(set(L[:40].tolist()) & set(L[40:80].tolist()) - {-1})
    print(f"  brothers merged in {trials} libraries: " + ", ".join(f"{k} {v}" for k, v in merged.items()))


def b3(d, labels: np.ndarray, subjects_only: bool) -> float:
    rows = np.flatnonzero(d.labelled) if subjects_only else np.arange(len(d))
    pred = [("c", int(labels[i])) if labels[i] >= 0 else ("n", int(i)) for i in rows]
    return bcubed_prf(d.truth[rows].tolist(), pred).f1


def run(name: str, anchor_name: str, seeds, show: int) -> None:
    d = load_labelled(name)
    print(f"\n=== {name}: {len(d)} faces, {int(d.labelled.sum())} subjects; anchor: {anchor_name} ===")
    links_only = cluster_faces(d.X, groups=d.photo.tolist())
    ours, _ = P.cluster_everyone(d)
    anchor = ANCHORS[anchor_name](d.X)
    print("\n-- 1. nobody named: people the anchor keeps together more than ours by links only --")
    differently_grouped(d, links_only, anchor, show)

    print("\n-- 2. labels present: B³ F, mean over seeds --")
    from face_pipeline.core.naming import FINE_LINK

    fine, _ = P.cluster_everyone(d, threshold=FINE_LINK)
    print(f"{'budget':<16}{'ours':>8}{'anchor':>8}{'anchor, rule 3':>16}{'names withheld':>16}")
    for k in P.LABEL_BUDGETS:
        for f in P.FRACTIONS:
            rows = []
            for seed in seeds:
                sp = P.make_split(d, seed, k, f)
                person, groups, _, _ = P.run_ours(d, sp, ours, fine=fine)
                plain, kept, n = rule3_withheld(d, sp, anchor)
                rows.append((P.score("ours", d, sp, person, groups, 0.0).b3_f, plain.b3_f, kept.b3_f, n))
            m = np.mean(rows, axis=0)
            print(f"{f'K={k} named={f:g}':<16}{m[0]:>8.4f}{m[1]:>8.4f}{m[2]:>16.4f}{m[3]:>16.1f}")

    print("\n-- 3. nobody named: the clustering rules (B³ F over all faces / over subject faces) --")
    cw = ANCHORS["chinese whispers cos>0.4 (k=50)"](d.X)
    for label, L in (("ours, links only", links_only), ("ours (shipped: poor faces placed)", ours),
                     ("any group joins (no quality condition)", any_group_joins(links_only, d.X, d.photo)),
                     ("chinese whispers cos>0.4", cw), (anchor_name, anchor)):
        print(f"  {label:<40}{b3(d, L, False):>8.4f} /{b3(d, L, True):.4f}")
    has_good = lambda L, i: L[i] >= 0 and (d.quality[L == L[i]] >= BARS.fine_link_quality).any()  # noqa: E731
    for i in (i for i in range(len(d)) if has_good(ours, i) and not has_good(links_only, i)):
        mates = d.truth[(ours == ours[i]) & (np.arange(len(d)) != i)]
        top = Counter(mates.tolist()).most_common(1)[0][0]
        who = d.truth[i] if d.labelled[i] else "a background face"
        how = "with its group of poor faces" if links_only[i] >= 0 else "alone"
        print(f"    face {i} ({who}, quality {d.quality[i]:.2f}, {how}) joined a group of {top}: "
              f"{'right' if top == d.truth[i] else 'another person by the labels'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="faces_dev,lfw_dev")
    ap.add_argument("--anchor", default="hdbscan (15-NN, min 3/3)", choices=list(ANCHORS))
    ap.add_argument("--seeds", default=",".join(map(str, P.SEEDS)))
    ap.add_argument("--show", type=int, default=3, help="people listed face by face in part 1, per data set")
    a = ap.parse_args()
    for name in a.datasets.split(","):
        run(name, a.anchor, [int(x) for x in a.seeds.split(",")], a.show)
    print("\n-- 4. brothers (synthetic) --")
    brothers()


if __name__ == "__main__":
    main()
