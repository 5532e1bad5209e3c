"""Rule 6's tie for poor faces at library scale: its cost, and how its new names depend on quality meaning something.

Naming rule 6 (``face_pipeline/core/naming.py``) lets a face below the model's ``fine_link_quality`` that is alone
at the fine link be tied to a person through the face it is most like in its group. The reason is measured on real
faces (``bench/quality.py --impostors``): a person's own poor faces are often alone at 0.5. This benchmark runs
:func:`naming.name_faces` on a synthetic library (``bench/scale.py``'s :func:`make_library`: Zipf people, people seen
once, look-alike twins at centre cosine ~0.65, 3 human labels on each person with >= 8 photos) with the tie off
(``fine_link_quality`` 0, what an unmeasured model gets) and on (0.5), and prints, side by side: seconds, faces
named, and wrong names among them. Two quality models:

* ``follows``: quality follows how far a face is from its own person's centre (the poorest 15 % get 0.3-0.5), as
  on real faces, where the quality score predicts how well a face links to its own person;
* ``random``: the same share of poor faces drawn at random, so quality says nothing; here aloneness at the fine
  link is ordinary evidence of someone else and the tie should not be trusted. It shows what the rule costs where
  its premise fails.

The coarse clustering is the product's: poor faces are placed by their group (``cluster_faces`` with the
faces' quality), so it is computed per quality model.

``--families`` runs synthetic families instead (150 per setting): a named person A (15 good photos and 3 poor ones,
3 labelled) and a relative with 0, 3 or 10 good photos and 2 poor ones, the relatives' identity centres at cosine
0.5 / 0.6 / 0.7 (good photos across ~0.31 / 0.37 / 0.43; issue 7's brothers: 0.62 within, 0.30 across). It prints
how many of the relative's good and poor faces get A's name with rule 6 off (faces named on their own score only),
with rule 6 and the poor-face tie off, and with both on (the product), and how many of A's own poor faces are
named. A group's mean face is far closer to a relative's labels than its single faces are (a tight group averages
its noise away), which is why rule 6 asks about a group that holds no label instead of naming it; what is left is
the relative's faces that clear the direct bar on their own score (the "rule 6 off" column).

Usage: ``PYTHONPATH=. .venv/bin/python bench/poor_faces.py [--sizes 50000,200000] [--families]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from face_pipeline.core import naming  # noqa: E402
from face_pipeline.core.cluster import cluster_faces  # noqa: E402
from scale import make_library  # noqa: E402

POOR_SHARE = 0.15
BARS = naming.bars_for("w600k_mbf")


def qualities(X: np.ndarray, ident: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    n = len(X)
    if mode == "random":
        return np.where(rng.random(n) < POOR_SHARE, rng.uniform(0.3, 0.5, n), rng.uniform(0.5, 0.9, n))
    _, inv = np.unique(ident, return_inverse=True)
    centre = np.zeros((inv.max() + 1, X.shape[1]))
    np.add.at(centre, inv, X)
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    own = np.einsum("ij,ij->i", X, centre[inv].astype(np.float32))
    own[np.bincount(inv)[inv] == 1] = np.median(own)  # one photo: no centre to be far from
    rank = own.argsort().argsort() / n
    return np.where(rank < POOR_SHARE, 0.3 + 0.2 * rank / POOR_SHARE, 0.5 + 0.4 * (rank - POOR_SHARE) / (1 - POOR_SHARE))


def run(n: int, seed: int = 0) -> None:
    X, ident, photo = make_library(n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    names, counts = np.unique(ident, return_counts=True)
    named = names[counts >= 8]
    human = np.full(n, -1, np.int64)
    for k, who in enumerate(named):
        human[rng.choice(np.flatnonzero(ident == who), 3, replace=False)] = k
    t0 = time.perf_counter()
    fine = cluster_faces(X, None, threshold=naming.FINE_LINK, groups=photo.tolist())
    print(f"\n{n:,} faces, {len(named):,} people named (3 labels each); fine clustering {time.perf_counter() - t0:.1f} s")
    print(f"{'quality':<10}{'tie':>6}{'seconds':>10}{'named':>10}{'wrong':>8}{'new names':>11}{'new wrong':>11}")
    for mode in ("follows", "random"):
        q = qualities(X, ident, mode, rng)
        coarse = cluster_faces(X, None, threshold=0.4, groups=photo.tolist(), quality=q, poor_below=BARS.fine_link_quality)
        base = None
        for flq in (0.0, BARS.fine_link_quality):
            t0 = time.perf_counter()
            res = naming.name_faces(X, human, groups=photo.tolist(), quality=q, clusters=coarse, fine_clusters=fine,
                                    direct=0.40, impostor=BARS.impostor, fine_link_quality=flq, tell_apart=BARS.tell_apart, suggest=False)
            secs = time.perf_counter() - t0
            auto = (res.person >= 0) & (human < 0)
            wrong = auto & (named[np.maximum(res.person, 0)] != ident)
            if base is None:
                base = (auto.sum(), wrong.sum())
            print(f"{mode:<10}{'on' if flq else 'off':>6}{secs:>10.1f}{auto.sum():>10,}{wrong.sum():>8,}"
                  f"{auto.sum() - base[0]:>11,}{wrong.sum() - base[1]:>11,}")


def families(per_setting: int = 150, seed: int = 7) -> None:
    """The --families table (module docstring)."""
    from synthetic import direction_sampler

    rng = np.random.default_rng(seed)
    dirs, _ = direction_sampler(rng, 512, 0.7)

    def faces(c: np.ndarray, m: int, w: float) -> np.ndarray:
        x = np.sqrt(w) * c + np.sqrt(1 - w) * dirs(m)  # w 0.62: good photos (0.62 apart), 0.40: poor ones
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    print(f"\nsynthetic families ({per_setting} per setting): a named person A (15 good + 3 poor photos, 3 labelled) and "
          "a relative with G good and 2 poor photos; cells: the relative's faces given A's name (good / poor)")
    print(f"{'G':>3}{'centres':>9}{'good across':>13}{'rule 6 off':>14}{'tie off':>14}{'tie on':>14}{'A own poor named':>18}")
    for good in (0, 3, 10):
        for rho in (0.5, 0.6, 0.7):
            X, truth, q, human = [], [], [], []
            for f in range(per_setting):
                a, u = dirs(1)[0], dirs(1)[0]
                u = u - (u @ a) * a
                b = rho * a + np.sqrt(1 - rho**2) * u / np.linalg.norm(u)
                X += [faces(a, 15, 0.62), faces(a, 3, 0.40), faces(b, good, 0.62), faces(b, 2, 0.40)]
                truth += [2 * f] * 18 + [2 * f + 1] * (good + 2)
                q += [0.7] * 15 + [0.35] * 3 + [0.7] * good + [0.35] * 2
                human += [f] * 3 + [-1] * (15 + good + 2)
            X, truth, q, human = np.vstack(X).astype(np.float32), np.array(truth), np.array(q), np.array(human)
            photo = list(range(len(X)))
            coarse = cluster_faces(X, None, threshold=0.4, groups=photo, quality=q, poor_below=BARS.fine_link_quality)
            fine = cluster_faces(X, None, threshold=naming.FINE_LINK, groups=photo)
            rel_good, rel_poor = (truth % 2 == 1) & (q >= 0.5), (truth % 2 == 1) & (q < 0.5)
            own_poor = (truth % 2 == 0) & (q < 0.5)
            cells, own = [], 0
            for group_names, flq in ((False, 0.0), (True, 0.0), (True, BARS.fine_link_quality)):
                res = naming.name_faces(X, human, groups=photo, quality=q, clusters=coarse, fine_clusters=fine, direct=0.40,
                                        impostor=BARS.impostor, fine_link_quality=flq, group_names=group_names, tell_apart=BARS.tell_apart,
                                        suggest=False)
                cells.append(f"{int((res.person[rel_good] >= 0).sum())} / {int((res.person[rel_poor] >= 0).sum())}")
                own = int((res.person[own_poor] == truth[own_poor] // 2).sum())
            print(f"{good:>3}{rho:>9.1f}{0.62 * rho:>13.2f}{cells[0]:>14}{cells[1]:>14}{cells[2]:>14}{f'{own} / {own_poor.sum()}':>18}")
    print(f"(per row: {per_setting} x G good and {per_setting * 2} poor relative faces; 'good across': the expected cosine "
          "between good photos of the two relatives; issue 7's brothers: 0.30)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="50000,200000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", action="store_true", help="the synthetic family table instead")
    a = ap.parse_args()
    if a.families:
        families()
        return
    for n in (int(x) for x in a.sizes.split(",")):
        run(n, a.seed)


if __name__ == "__main__":
    main()
