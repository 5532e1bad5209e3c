"""Quality benchmark that an easy set cannot fool: ours beside the simple anchors, on the same embeddings.

Run ``PYTHONPATH=. .venv/bin/python bench/quality.py`` (lfw_dev and faces_dev; ``--datasets faces_dev`` for a
quick look; ``--impostors`` prints only the model's impostor range, the measurement behind
``naming.MODEL_BARS``). Protocol and columns: :mod:`face_pipeline.evaluation.protocol`. Embeddings are the cached
product embeddings of every face (:func:`face_pipeline.evaluation.datasets.load_labelled`).

Printed per data set:
1. the impostor range of the model (cosine between subject faces filed under different names);
2. per label budget (K, named fraction): every method averaged over the seeds, and for ours the worst seed's
   strangers named (the constraint is per seed); beside ours, ``ours + N answers``: the same split after a user
   answered the first N clicks of the product's review queue from the truth (:mod:`face_pipeline.evaluation.answers`;
   people the user named while answering count as named from then on). The anchors have no queue: their rows
   are their automation alone;
3. nobody named (pure clustering);
4. the per-face centroid frontier (cosine 0.35 … 0.55) per budget, averaged over seeds, and where ours sits:
   the frontier's best recall at ours' stranger rate, per seed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from face_pipeline.evaluation import protocol as P  # noqa: E402
from face_pipeline.evaluation.anchors import ANCHORS  # noqa: E402
from face_pipeline.evaluation.datasets import load_labelled  # noqa: E402

OURS = "ours"
HEAD = (f"{'method':<34}{'knownP':>8}{'knownR':>8}{'unk named':>10}{'rate':>8}{'bg named':>9}{'B3 P':>7}{'B3 R':>7}{'B3 F':>7}"
        f"{'uB3 P':>7}{'uB3 R':>7}{'uB3 F':>7}{'pairF':>7}{'noise':>7}{'sec':>7}")


def fmt(name: str, rows: list[P.Row], worst: bool = False) -> str:
    m = lambda f: float(np.mean([f(r) for r in rows]))  # noqa: E731
    named = m(lambda r: r.strangers_named)
    unk = f"{named:.1f}" if len(rows) > 1 else f"{int(named)}"
    if worst and len(rows) > 1:
        unk = f"{unk}/{max(r.strangers_named for r in rows)}"
    return (f"{name:<34}{m(lambda r: r.known_p):>8.4f}{m(lambda r: r.known_r):>8.4f}{unk:>10}{m(lambda r: r.stranger_rate):>8.3%}{m(lambda r: r.background_named):>9.1f}"
            f"{m(lambda r: r.b3_p):>7.3f}{m(lambda r: r.b3_r):>7.3f}{m(lambda r: r.b3_f):>7.3f}{m(lambda r: r.unk_b3_p):>7.3f}"
            f"{m(lambda r: r.unk_b3_r):>7.3f}{m(lambda r: r.unk_b3_f):>7.3f}{m(lambda r: r.pair_f):>7.3f}{m(lambda r: r.noise):>7.3f}"
            f"{m(lambda r: r.seconds):>7.2f}")


def impostors(d) -> None:
    from face_pipeline.core.naming import FINE_LINK, GENUINE_FINE_RATE

    q, mx, n = P.impostor_quantiles(d)
    print(f"impostor range of the model on {d.name} (cosine, subject faces of different names, {n:,} pairs): "
          + ", ".join(f"p{100 * k:g} {v:.3f}" for k, v in q.items()) + f", max {mx:.3f}")
    bins = P.fine_link_by_quality(d, FINE_LINK)
    print(f"a person's own faces linked at the fine link {FINE_LINK} (best link to another of their faces), by quality: "
          + ", ".join(f"{lo:.1f}+ {share:.2f} (n={k})" for lo, k, share in bins)
          + f" -> fine_link_quality {P.fine_link_quality(bins, GENUINE_FINE_RATE):.1f} (every bin upward >= {GENUINE_FINE_RATE:g})")
    for k in (3, 1):
        noise, n_scores = P.label_set_noise(d, k)
        print(f"one face against two sets of {k} labels of its own person, |score difference| ({n_scores:,} scores): "
              + ", ".join(f"p{100 * x:g} {v:.3f}" for x, v in noise.items()) + (" -> tell_apart (p90)" if k == 3 else ""))


#: Review-queue clicks a user spends after the first organise (:mod:`face_pipeline.evaluation.answers`).
ANSWER_BUDGETS = (10, 50)


def _with_answers(d, sp, clusters, fine, budget: int, t_ours: float, asked: list) -> P.Row:
    """Ours after a user answered the first ``budget`` clicks of the review queue, from the truth."""
    from face_pipeline.core.naming import unknown_groups
    from face_pipeline.evaluation.answers import answer_queue

    t0 = time.perf_counter()
    res, a = answer_queue(d, sp, lambda split, rej, cl: P.run_ours(d, split, clusters, fine=fine, rejected=rej, cannot_link=cl)[3], budget)
    groups = unknown_groups(clusters, res.person, min_size=2)
    asked.append((budget, a.answers, a.questions, a.yes, a.faces_labelled))
    return P.score(f"{OURS} + {budget} answers", d, a.split, res.person, groups, time.perf_counter() - t0 + t_ours)


def _per_budget(asked: list) -> list[tuple[float, float, float, float]]:
    return [tuple(float(np.mean([r[j] for r in asked if r[0] == b])) for j in (1, 2, 3, 4)) for b in ANSWER_BUDGETS]


def run(name: str, seeds, budgets, fractions, methods) -> None:
    d = load_labelled(name)
    n_people = len(set(d.identity[d.labelled]))
    print(f"\n=== {name}: {len(d)} faces ({int(d.labelled.sum())} subjects, {int((~d.labelled).sum())} background strangers), "
          f"{n_people} people ===")
    impostors(d)
    from face_pipeline.core.naming import FINE_LINK

    clusters, t_ours = P.cluster_everyone(d)
    fine, t_fine = P.cluster_everyone(d, threshold=FINE_LINK)
    t_ours += t_fine
    anchor_labels = {k: P.timed(lambda fn=fn: fn(d.X)) for k, fn in ANCHORS.items() if k in methods}
    print(f"clustering everyone once (labels do not steer it): ours {t_ours:.1f}s (links {P._defaults(P.OursConfig()).threshold} and {FINE_LINK}); "
          + ", ".join(f"{k} {t:.1f}s" for k, (_, t) in anchor_labels.items()))

    splits = [P.make_split(d, s, k, f) for k in budgets for f in fractions for s in seeds]
    splits.append(P.nobody(d))
    by_budget: dict[tuple, dict[str, list[P.Row]]] = defaultdict(lambda: defaultdict(list))
    frontier: dict[tuple, list] = defaultdict(list)
    above: dict[tuple, list] = defaultdict(list)
    asked: dict[tuple, list] = defaultdict(list)
    for sp in splits:
        key = (sp.k, sp.fraction)
        person, groups, secs, _ = P.run_ours(d, sp, clusters, fine=fine)
        row = P.score(OURS, d, sp, person, groups, secs + t_ours)
        by_budget[key][OURS].append(row)
        for budget in ANSWER_BUDGETS:
            by_budget[key][f"{OURS} + {budget} answers"].append(_with_answers(d, sp, clusters, fine, budget, t_ours, asked[key]))
        for k, (labels, t) in anchor_labels.items():
            ap, ag = P.run_anchor(d, sp, labels)
            by_budget[key][k].append(P.score(k, d, sp, ap, ag, t))
        if sp.people:
            fr = P.centroid_frontier(d, sp)
            frontier[key].append(fr)
            above[key].append((row.known_r, P.frontier_recall_at(fr, row.stranger_rate), row.strangers_named, row.stranger_rate))

    for key, rows in by_budget.items():
        k, f = key
        sp0 = next(s for s in splits if (s.k, s.fraction) == key)
        title = "nobody named" if not sp0.people else f"K={k} labelled photos, named fraction {f:g} ({len(sp0.people)} people named), {len(rows[OURS])} seeds"
        print(f"\n-- {name}: {title} --")
        print(HEAD)
        print("-" * len(HEAD))
        for method, rs in rows.items():
            print(fmt(method, rs, worst=method.startswith(OURS)))
        for budget, (clicks, questions, yes, labelled) in zip(ANSWER_BUDGETS, _per_budget(asked[key])):
            print(f"  ours + {budget} answers: {clicks:.1f} clicks used on {questions:.1f} questions, {yes:.1f} yes, "
                  f"{labelled:.1f} faces labelled by them (mean over seeds; fewer clicks = the queue ran dry)")
    print(f"\n-- {name}: per-face centroid frontier (mean over seeds) and ours --")
    print(f"{'budget':<22}" + "".join(f"{t:>14.3f}" for t in P.FRONTIER))
    for key, frs in frontier.items():
        k, f = key
        cells = []
        for j in range(len(P.FRONTIER)):
            r = np.mean([fr[j][1] for fr in frs])
            s = np.mean([fr[j][2] for fr in frs])
            cells.append(f"{r:.4f}/{s:5.1f}")
        print(f"{f'K={k} named={f:g}':<22}" + "".join(f"{c:>14}" for c in cells))
    print("(cell: known recall / strangers named)")
    print(f"\n{'budget':<22}{'seed':>5}{'ours recall':>13}{'ours strangers':>16}{'frontier recall at same rate':>30}{'above':>7}")
    for key, vals in above.items():
        k, f = key
        for s, (r, fr, n, rate) in zip((sp.seed for sp in splits if (sp.k, sp.fraction) == key), vals):
            print(f"{f'K={k} named={f:g}':<22}{s:>5}{r:>13.4f}{f'{n} ({rate:.3%})':>16}{fr:>30.4f}{'yes' if r >= fr else 'NO':>7}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="lfw_dev,faces_dev")
    ap.add_argument("--seeds", default=",".join(map(str, P.SEEDS)))
    ap.add_argument("--budgets", default=",".join(map(str, P.LABEL_BUDGETS)))
    ap.add_argument("--fractions", default=",".join(map(str, P.FRACTIONS)))
    ap.add_argument("--methods", default=";".join(ANCHORS), help="anchors to run (names separated by ;)")
    ap.add_argument("--impostors", action="store_true", help="print only the impostor range of each data set")
    a = ap.parse_args()
    for name in a.datasets.split(","):
        if a.impostors:
            impostors(load_labelled(name))
            continue
        run(name, [int(x) for x in a.seeds.split(",")], [int(x) for x in a.budgets.split(",")],
            [float(x) for x in a.fractions.split(",")], set(a.methods.split(";")))


if __name__ == "__main__":
    main()
