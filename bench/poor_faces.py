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

Usage: ``PYTHONPATH=. .venv/bin/python bench/poor_faces.py [--sizes 50000,200000]``
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
    coarse = cluster_faces(X, None, threshold=0.4, groups=photo.tolist())
    fine = cluster_faces(X, None, threshold=naming.FINE_LINK, groups=photo.tolist())
    print(f"\n{n:,} faces, {len(named):,} people named (3 labels each); both clusterings {time.perf_counter() - t0:.1f} s")
    print(f"{'quality':<10}{'tie':>6}{'seconds':>10}{'named':>10}{'wrong':>8}{'new names':>11}{'new wrong':>11}")
    for mode in ("follows", "random"):
        q = qualities(X, ident, mode, rng)
        base = None
        for flq in (0.0, BARS.fine_link_quality):
            t0 = time.perf_counter()
            res = naming.name_faces(X, human, groups=photo.tolist(), quality=q, clusters=coarse, fine_clusters=fine,
                                    direct=0.40, impostor=BARS.impostor, fine_link_quality=flq, suggest=False)
            secs = time.perf_counter() - t0
            auto = (res.person >= 0) & (human < 0)
            wrong = auto & (named[np.maximum(res.person, 0)] != ident)
            if base is None:
                base = (auto.sum(), wrong.sum())
            print(f"{mode:<10}{'on' if flq else 'off':>6}{secs:>10.1f}{auto.sum():>10,}{wrong.sum():>8,}"
                  f"{auto.sum() - base[0]:>11,}{wrong.sum() - base[1]:>11,}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="50000,200000")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for n in (int(x) for x in a.sizes.split(",")):
        run(n, a.seed)


if __name__ == "__main__":
    main()
