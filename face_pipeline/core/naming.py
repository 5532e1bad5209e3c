"""Naming rules: which unlabelled faces automation may give a person's name, and which only become suggestions.

A wrong name is far worse than a missing one, so every rule below is a reason not to name, and anything
suggestive but not sufficient becomes a question for a person (a suggestion) instead of an answer.

Rules, and why
--------------
1. **Only people define a person.** Prototypes (centroid + exemplars, :func:`assign.build_prototypes`) come
   from human labels (and confirmed suggestions, which are human labels) and nothing else. No prototype moves
   because of faces automation named: re-centring on "confident" matches is how 25 faces of a man that cleared
   the bar against his brother's three labels pulled the other 505 after them.
2. **No vouching.** A face is named on its own similarity to the person's human labels. Faces named in the
   same run never vouch for further faces, so no chain (through look-alikes, through children's faces, which
   all look alike) can carry a name; chains become suggestions, one confirmed step at a time
   (:func:`_chain_questions`: a person growing up is found across the years by their own photos, each step
   answered by a person before the next is asked).
3. **The impostor bar.** No face is named, nor suggested on its own score, when its similarity to the person lies
   inside the model's impostor range: the 99.99th percentile of the cosine between faces of different people,
   measured per model (:data:`MODEL_BARS`). A face is named only at the *direct bar* (the setting
   ``person_match_threshold``), which sits above it; between the two bars it becomes a suggestion. The one
   question about a face inside the range is a step of a chain of the person's own photos (a child's face is far
   from the adult's labels by nature): its evidence is the step, a pair at the stricter link (:func:`_chain_questions`).
4. **Low-quality faces carry no name.** A human-labelled face whose quality score is below ``min_quality``
   (tiny, blurred, strongly turned) is not used as a prototype: such faces sit close to everyone's low-quality
   faces and would name strangers through them. It keeps its own label.
5. **The library's structure can veto.** Everyone is clustered (:func:`cluster.cluster_faces`, labels not
   used). A face that clears the direct bar is still not named when its own group is clearly someone else:
   * the group holds human labels of other people but none of this person;
   * the group (at least ``MIN_EVIDENCE_CLUSTER`` faces) holds no label and, as a whole, is not this person: its
     mean face stays under the direct bar, or fewer than half of its faces (:data:`MAJORITY`) clear the direct
     bar on their own. The second is the like-for-like question: a tight group's mean face averages its noise
     away and sits closer to anyone alike than its faces do (issue 7's brothers: faces at 0.30 median, group mean
     0.43-0.48), while a group that is this person has most of its faces at the bar, as the person's faces have;
   * the group holds no label and has a face in a photo beside a group that holds this person's labels: two
     faces of one photo are two people (in a family library, the relatives in the family photos);
   * the face's stricter group holds no label and its coarse group is not this person's alone
     (:func:`_fine_group_of_its_own`): nothing but the face's own score ties it to this person (full runs only: an
     incremental run has no stricter clustering);
   * the group holds this person's labels *and* another's (the link could not part them: in a family library, the
     family), and the face's lead over that other person is within what chance gives between two label sets of
     one person (``ModelBars.tell_apart``, :func:`_too_close_to_call`): the face cannot tell the two apart either.
   It was written for the siblings case: his 530 faces formed a tight group of their own although 25 of them
   cleared 0.40 against his brother's labels. A second clustering at the stricter link :data:`FINE_LINK` is asked
   the same questions, for relatives (cosine 0.4-0.5) whom the first one merged; a face whose stricter group holds
   this person's labels is tied to them, and no label-less group's figures veto it. The vetoed faces become
   suggestions. Measured (bench/households.py, synthetic families and people growing up; bench/quality.py): the
   majority test takes the ageing set's strangers named from ~15 to ~1 per library and costs lfw_dev 1-4 photos of
   named people at K=1 (a person's own second group where few faces clear the bar alone, e.g. Tim Henman's); the
   photo test, with rule 7's nearest-known-face test, takes the families' relatives named from ~610 to ~55 and
   costs lfw_dev nothing; in families photographed one face a photo (no photo rule can read anything) the last
   two bullets with rule 7's runner-up test take the relatives named from ~580 to ~206 per library (12.2 % -> 4.4 %,
   known recall 0.962 -> 0.944) and move no figure on lfw_dev.
6. **A group that holds one person's labels may name its other faces, one hop.** A face whose group (clustering
   of everyone) holds human labels of this person and of nobody else (or holds no label while the face's stricter
   group at :data:`FINE_LINK` holds this person's and nobody else's: the coarse clustering cut the person in two,
   :func:`_group_holder`), and whose group's mean face clears the direct bar against this person, is named when its own score is outside the impostor range (>= the impostor
   bar) and this person is its best admissible one. This is what a user naming a cluster does, with three guards
   the anchors lack: the face alone must be outside the impostor range; the stricter clustering at
   :data:`FINE_LINK` must tie it to the person as well (its fine group holds this person's labels and nobody
   else's), because a face alone at that link reached the group through 0.4-0.5 edges, where brothers meet
   (lfw_dev: Mark McClellan was named Scott McClellan without this guard).
   **A group that holds no label is asked about, never named** (a ``cluster_is_person`` suggestion), at either
   link. A group's mean face averages its faces' noise away, so it sits far closer to anyone alike than its
   single faces do: issue 7's brothers (0.62 within, 0.30 across; synthetic with those numbers) have single faces
   at ~0.35 against the brother's three labels but a group mean of 0.43-0.48, above the direct bar, and naming
   label-less groups by their mean gave the brother's name to ~440 of his 530 photos. Mean faces of a person's
   own other groups (lfw_dev: 0.35-0.55 against the person's labels) and of a relative's overlap, so no bar tells
   them apart; one answer settles a whole group. The price, on lfw_dev with one label per person: known recall
   0.9896 -> 0.9806 (1/2 named) and 0.9968 -> 0.9686 (1/10, with rule 5's majority test), back to 0.9947 / 0.9976 after 10 clicks of the
   review queue (bench/quality.py; bench/poor_faces.py --families for the families). Being alone at that link is strong evidence only for a face good
   enough to link there when it is the person: below the model's measured ``fine_link_quality`` a person's
   own faces are often alone at 0.5 too (lfw_dev: 11 % of n=99 at quality 0.4-0.5, 36 % of n=11 at 0.3-0.4,
   all 3 below; 2 % at 0.5-0.6, see :class:`ModelBars`), while the impostor range does not move with quality
   (p99.99 0.270-0.282 in every bin). Such a poor face alone at the fine link is tied through its group
   instead: the rest of its group as a whole (its mean face, the face's own photo left out) must clear the direct
   bar for it, and the face of another photo it is most like there must be this person's (good) human label, or
   unlabelled and tied to them at the fine link itself. A relative's poor face is usually most like the
   relative's own photos, which are not tied to this person, and then stays a suggestion; a relative seen once,
   in a poor photo, reaches the person's group through its few nearest faces, which the group as a whole does not
   claim (synthetic family tests pin both). A relative whose poor face the person's group as a whole does claim
   is what this cannot tell apart — its score must still clear the impostor bar and this person be its best
   (bench/poor_faces.py measures what the tie costs in synthetic families).
   Names given this way vouch for nobody (no second hop). On lfw_dev it lifts K=1 recall from 0.95 to 0.98, and
   the only stranger named on any seed is LFW label noise (bench/quality.py). What no rule here stops: a
   relative's face that clears the direct bar on its own score, in a group rule 5 cannot veto (a relative's group
   whose mean clears the bar); it is what a person's answers are for, and the names given on the weakest tie (a
   stricter group without labels inside the person's coarse group) are put to them first (:func:`_names_to_check`).
7. **People's constraints hold.** Manual labels are never touched; a rejected person is never given or
   suggested again; a person already in a photo (human label) is not given to another of its faces; faces of
   one photo are matched to people jointly (Hungarian, :func:`assign.assign_scores`); a "different people"
   answer between two faces is a cannot-link no name crosses.
   **Faces known not to be a person hold their look-alikes back.** The other faces in the photos of a person's
   human labels are certainly someone else (one person per photo), and so are the faces a person said are not
   them (a rejection, a "different people" answer with one of their labels). A face more like one of these than
   like any of the person's own labels is not named that person automatically: it is asked about. In a family
   library these are the relatives who stand beside the person in family photos, and a relative's other photos
   are nearer the relative than the person (synthetic families, bench/households.py); every "no" a user gives
   holds back the faces most like the one they rejected. The human labels of the face's runner-up (the named
   person it scores best for below the name it was given) are known not to be the person too: a face nearer one of them than any of
   the person's own labels is between two named people, as a relative between two named relatives is, and is
   asked about. Nothing automation named is used here.
   The same holds for groups: a group with a face in a photo beside a group that holds the person's labels is
   someone else (rule 5).
8. **A trained head only decides among named people.** When a projection head is promoted (its gate passed)
   and the run asks for it, it may re-rank a raw name among the people the face clears the impostor bar for in
   raw space, or name a face that clears that bar for exactly one named person when the head's score reaches
   its bar (:class:`heads.NamedPersonHead`). Whether a face is anyone at all stays a raw-space question, rule 5
   still vetoes, and unknown people are clustered in raw space.

Everything here is plain numpy on arrays indexed by face row; :mod:`organize` maps rows to SQL ids.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Callable, Hashable, Iterable, Sequence

import numpy as np

from face_pipeline.core import assign as assign_mod


@dataclass(frozen=True)
class ModelBars:
    """Where a recognition model's impostor range ends, measured, with how it was measured."""

    impostor: float  # 99.99th percentile of the cosine between faces of different people: the bar
    impostor_p99: float
    impostor_p999: float
    impostor_max: float  # the maximum is label noise (the same person filed under two names), not a bar
    measured: str
    #: The lowest quality from which at least :data:`GENUINE_FINE_RATE` of a person's faces, in every quality bin
    #: upward, link to another face of theirs at :data:`FINE_LINK`: from there on, a face alone at the fine link is
    #: strong evidence that it is someone else; below it a poor face alone there is tied through the face it is most
    #: like (rule 6). 0 = not measured: every face needs its own fine tie.
    fine_link_quality: float = 0.0
    #: How far one face's scores against two sets of 3 human labels of the *same* person lie apart by chance (90th
    #: percentile): a lead over another person smaller than this does not tell the two apart. Read only where the
    #: clustering could not part the two either (rule 5: a group holding both people's labels). 0 = not measured.
    tell_apart: float = 0.0


#: Per recognition model (``Settings.model_name``). Measured by ``bench/quality.py --impostors`` on lfw_dev:
#: the subject face of every photo (5,976 faces, 2,940 people), all 17.8M pairs of faces filed under different
#: names, cosine of the L2-normalised embeddings. A rule with a reason, not a fit: nothing here is tuned to a
#: score; a new model needs its own line measured the same way.
MODEL_BARS: dict[str, ModelBars] = {
    "w600k_mbf": ModelBars(
        impostor=0.281, impostor_p99=0.166, impostor_p999=0.226, impostor_max=0.990,
        measured="lfw_dev subject faces, 17,822,605 different-name pairs, detector input rule fit1024-small640-tile3, "
        "bench/quality.py --impostors (fixed 640 input gave 0.280; faces_dev: p99.99 0.243, max 0.278 over 52k pairs); "
        "fine_link_quality: lfw_dev faces of people with >= 5 photos, share whose best own-person link reaches 0.5, "
        "per quality bin of 0.1: 0.64, 0.89, 0.98, 0.99, 1.00, 1.00 from 0.3 up (faces_dev: 0.55, 0.64, 0.98, 1.00 ...); "
        "tell_apart: lfw_dev people with >= 7 photos, two disjoint random sets of 3 labels, |score difference| of their "
        "other photos (hybrid prototypes), 5 draws, 5,505 scores: p50 0.038, p90 0.095, p95 0.115 (1 label each: p90 0.181; "
        "faces_dev: 0.116 at 3)",
        fine_link_quality=0.5, tell_apart=0.095,
    ),
}
#: For a model nobody measured: ArcFace-family models share roughly this tail; err on the strict side.
UNMEASURED = ModelBars(impostor=0.35, impostor_p99=0.2, impostor_p999=0.28, impostor_max=1.0, measured="not measured: conservative default")

#: A cluster needs at least this many faces before its mean face is evidence against a name (rule 5): the mean
#: of two faces is still mostly each face.
MIN_EVIDENCE_CLUSTER = 2
#: The stricter link of the second clustering used as evidence (rule 5): relatives meet at cosine 0.4-0.5
#: (issue 7's family set), so at 0.5 a relative's faces form a tight group of their own even where the
#: clustering at the link threshold merged them into their relative's; that group then vetoes the name. On
#: lfw_dev and faces_dev it changes no number (bench/quality.py): a guard for families, not a fit.
FINE_LINK = 0.5
#: Share of a person's faces that must link to another of theirs at FINE_LINK for being alone there to count as
#: strong evidence of someone else (``ModelBars.fine_link_quality``).
GENUINE_FINE_RATE = 0.95
#: Rule 5: a group without labels is a person's, as a whole, only when at least this share of its faces clear the
#: direct bar for them on their own (a majority: most of the group is that person, by the single-face measure).
MAJORITY = 0.5
#: A "same person?" suggestion between two groups needs their mean faces at least at the direct bar.
SAME_PERSON_NEIGHBOURS = 5


def bars_for(model_name: str) -> ModelBars:
    return MODEL_BARS.get(model_name, UNMEASURED)


def chain_graph_floor(method: str, link: float, tell_apart: float) -> float:
    """The floor the kNN graph is kept down to when naming reads it for chain questions: the lowest any reader
    needs (the clustering at ``link``, the stricter one at :data:`FINE_LINK`, the chain's competitors a
    ``tell_apart`` under the stricter link), so one graph serves all of them (:func:`_chain_questions`)."""
    from face_pipeline.core.cluster import REGISTRY

    spec = REGISTRY[method]
    return min(spec.floor(link), spec.floor(FINE_LINK), FINE_LINK - tell_apart)


@dataclass(frozen=True)
class RawSuggestion:
    """A suggestion in row / person-index terms (organize turns it into a ``suggestions.Suggestion``)."""

    kind: str  # face_is_person | cluster_is_person | check_names | same_person
    rows: tuple[int, ...]
    person: int | None = None
    other_person: int | None = None
    other_rows: tuple[int, ...] = ()
    score: float = 0.0
    bar: float = 0.0
    floor: float = 0.0  # where the evidence starts to count (:attr:`suggestions.Suggestion.floor`)
    cluster: int | None = None
    other_cluster: int | None = None
    #: The face of ``person`` the evidence points at, shown beside the question ("looks like this photo of X"): a
    #: chain step's own start, else the person's human label the asked faces are most like (:func:`_point_at_labels`).
    evidence: int | None = None


@dataclass
class Naming:
    """Result per face row: ``person`` (-1 = none; human labels kept), ``confidence`` and ``margin`` of the
    name (NaN where not named), ``vetoed`` (a name the evidence withheld: it cleared the direct bar but its cluster
    said no, rule 5, or a face known not to be the person is nearer, rule 7) and suggestions."""

    person: np.ndarray
    confidence: np.ndarray
    margin: np.ndarray
    vetoed: np.ndarray
    suggestions: list[RawSuggestion] = field(default_factory=list)


def _mean_faces(X: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cluster ids, normalised mean face per cluster, size per cluster) for labels >= 0."""
    pos = np.flatnonzero(labels >= 0)
    if pos.size == 0:
        return np.zeros(0, np.int64), np.zeros((0, X.shape[1]), np.float32), np.zeros(0, np.int64)
    ids, inv, cnt = np.unique(labels[pos], return_inverse=True, return_counts=True)
    from scipy import sparse  # a sparse membership product: np.add.at is ~20x slower at a million faces

    member = sparse.csr_matrix((np.ones(pos.size), (inv.ravel(), np.arange(pos.size))), shape=(ids.size, pos.size))
    sums = np.asarray(member.astype(np.float32) @ X[pos], dtype=np.float64)  # float32 product: no 4 GB copy at 1M faces
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return ids, (sums / np.maximum(norms, 1e-12)).astype(np.float32), cnt


def name_faces(
    X: np.ndarray,
    human: np.ndarray,
    *,
    groups: Sequence[Hashable] | None,
    quality: np.ndarray | None,
    clusters: np.ndarray | None,
    direct: float,
    impostor: float,
    min_quality: float = 0.3,
    margin: float = 0.0,
    strategy: str = "hybrid",
    rejected: dict[int, set[int]] | None = None,
    cannot_link: Iterable[tuple[int, int]] = (),
    candidates: Sequence[int] | None = None,
    suggest: bool = True,
    group_names: bool = True,
    fine_clusters: np.ndarray | None = None,
    fine_link_quality: float = 0.0,
    tell_apart: float = 0.0,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
    head=None,
) -> Naming:
    """Apply the naming rules (module docstring) to faces ``X`` (N, D), L2-normalised.

    ``human`` (N,) is the person index each face was given by a person (-1 = none); ``groups`` the photo of
    each face; ``quality`` its quality score (None = all good); ``clusters`` the clustering of all faces
    (labels not used; -1 = noise; None = no structural evidence); ``rejected`` row → person indices it is not;
    ``cannot_link`` row pairs that are different people; ``candidates`` the rows that may be named (default:
    every row without a human label). ``direct`` names, ``impostor`` bounds suggestions (rule 3). Faces below
    ``fine_link_quality`` (the model's :attr:`ModelBars.fine_link_quality`; 0 = none) alone at the fine link are
    tied there through the face they are most like (rule 6). ``tell_apart`` (the model's
    :attr:`ModelBars.tell_apart`; 0 = none) is the lead a face needs over another person whose labels share its
    group (rule 5). ``neighbours`` (indices, similarities), each (N, k): the nearest faces of every face, as the
    clustering's graph holds them; with it, chains of a person's own photos become questions (:func:`_chain_questions`).
    ``head`` (a promoted
    :class:`heads.NamedPersonHead`, or None) may decide among named people (rule 8).
    """
    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    human = np.asarray(human, dtype=np.int64)
    person = human.copy()
    confidence = np.full(n, np.nan)
    gap = np.full(n, np.nan)
    vetoed = np.zeros(n, bool)
    out = Naming(person, confidence, gap, vetoed)
    q = np.ones(n) if quality is None else np.nan_to_num(np.asarray(quality, dtype=np.float64), nan=1.0)
    good = q >= min_quality
    # Faces often alone at the fine link even when they are the person (rule 6).
    poor = q < fine_link_quality
    evidence = np.flatnonzero((human >= 0) & good)
    cand = np.array([i for i in (range(n) if candidates is None else candidates) if human[i] < 0], dtype=np.int64)
    partners: dict[int, set[int]] = defaultdict(set)  # row → rows a person called someone else
    for a, b in cannot_link:
        partners[int(a)].add(int(b))
        partners[int(b)].add(int(a))
    if evidence.size == 0:
        if suggest and clusters is not None:
            out.suggestions += _same_person_clusters(X, clusters, person, direct, partners=partners)
        return out
    protos = assign_mod.build_prototypes(X[evidence], human[evidence].tolist())
    col = {int(p): c for c, p in enumerate(protos.person_ids)}  # person index → prototype column
    pers = np.array(protos.person_ids, dtype=np.int64)

    # Constraints per candidate row, as prototype columns: rejections, cannot-links to labelled faces.
    bad_local: dict[int, set[int]] = {}
    for local, i in enumerate(cand.tolist()):
        bad = {col[p] for p in (rejected or {}).get(i, ()) if p in col}
        bad |= {col[int(human[j])] for j in partners.get(i, ()) if human[j] >= 0 and int(human[j]) in col}
        if bad:
            bad_local[local] = bad
    g = None if groups is None else np.asarray(list(groups), dtype=object)
    photo = None  # the photos as int codes (a face of no photo is a photo of its own), for the rules that compare them
    if g is not None:
        from face_pipeline.core.clustering.neighbours import _group_codes

        photo = _group_codes(g, n)
    occupied: dict[Hashable, set[int]] = defaultdict(set)
    if g is not None:
        for i in np.flatnonzero(human >= 0):
            if int(human[i]) in col:
                occupied[g[i]].add(col[int(human[i])])

    # Scores of candidate faces against named people, stored only where they can matter: at or above the lowest
    # bar any rule reads (a library of 1M faces and 10k people has no room for the dense matrix).
    floor = min(impostor, direct, getattr(head, "raw_floor", np.inf))
    S = _Scores(assign_mod.candidate_scores(protos, X[cand], strategy, floor=floor), floor)
    res = S.assign(threshold=direct, margin=margin, groups=None if g is None else g[cand].tolist(), rejected=bad_local,
                   occupied=dict(occupied) if g is not None else None)

    # Rule 5: the face's own cluster (and the finer one, when given) may say it is someone else.
    coarse = _view(X, clusters, human, evidence, protos, strategy, floor, cand, S, direct)
    fine = _view(X, fine_clusters, human, evidence, protos, strategy, floor, cand, S, direct)
    for v in (coarse, fine):
        if v is not None and photo is not None:
            v.beside = _seen_beside(v, photo)
    labelled_in = coarse.holders if coarse is not None else {}
    if coarse is not None:
        clusters = coarse.clusters

    for local, i in enumerate(cand.tolist()):
        c_p = int(res.person_index[local])
        if c_p < 0:
            continue
        p = int(pers[c_p])
        m = float(res.margin[local])
        m = m if np.isfinite(m) else 1.0
        if _someone_else(coarse, fine, i, p, c_p, direct) or _too_close_to_call(S, local, float(res.confidence[local]),
                                                                              _co_holders(coarse, fine, i, p), col, tell_apart):
            vetoed[i] = True
            continue
        person[i] = p
        confidence[i] = float(res.confidence[local])
        gap[i] = m

    # Rule 6: a face in a group that holds this person's labels and nobody else's, whose mean face clears the
    # direct bar, is named when its own score is outside the impostor range, this person is
    # its best admissible one, and the stricter clustering ties it to the person too. One hop from human labels:
    # faces named here vouch for nobody.
    if coarse is not None and group_names:
        taken = _people_by_photo(person, g, (person >= 0) & (human < 0))
        poor_ties = _PoorFaceTies(X, coarse, fine, human, good, photo, poor)
        pending: list[tuple[int, int, float, float]] = []  # poor faces alone at the fine link, asked in one batch
        for local, i in enumerate(cand.tolist()):
            c = int(clusters[i])
            if person[i] >= 0 or vetoed[i] or c < 0:
                continue
            p = _group_holder(coarse, fine, i)
            if p is None:
                continue  # a group holding no label is asked about (cluster_is_person), never named: see the docstring
            if p not in col or coarse.score(c, col[p]) < direct:
                continue
            if g is not None and (p in taken[g[i]] or col[p] in occupied.get(g[i], ())):  # one person per photo
                continue
            score, lead, is_best = S.standing(local, col[p], len(pers), bad_local.get(local, ()))
            if score < impostor or not is_best:
                continue
            if not _linked_at_fine_link(fine, i, p):
                if poor_ties.may_ask(i):
                    pending.append((i, p, score, lead))
                continue
            person[i], confidence[i], gap[i] = p, score, lead
            if g is not None:
                taken[g[i]].add(p)
        for i, p, score, lead in poor_ties.tied(pending, direct):
            if g is not None and p in taken[g[i]]:
                continue
            person[i], confidence[i], gap[i] = p, score, lead
            if g is not None:
                taken[g[i]].add(p)

    # Rule 8: a promoted head decides among named people, never whether a face is anyone.
    if head is not None and cand.size and len(pers):
        _head_decides(X, human, person, confidence, gap, vetoed, cand, S, bad_local, occupied, g, pers, col, evidence,
                      impostor, coarse, fine, direct, head)

    # Rule 7: a face more like someone known not to be the person than like the person's own labels keeps no name.
    held = _nearer_someone_known_else(X, human, person, photo, rejected, partners,
                                      runner_up=_runner_ups(S, cand, person, human, col, pers), exemplars=_exemplars_by_person(protos, pers))
    person[held], confidence[held], gap[held] = -1, np.nan, np.nan
    vetoed[held] = True

    # Rule 7 among automatic names: two faces a person called different are never both given one name.
    for a, others in partners.items():
        for b in others:
            if a < b and person[a] >= 0 and person[a] == person[b] and (human[a] < 0 or human[b] < 0):
                loser = b if human[a] >= 0 or (human[b] < 0 and np.nan_to_num(confidence[a]) >= np.nan_to_num(confidence[b])) else a
                if human[loser] < 0:
                    person[loser], confidence[loser], gap[loser] = -1, np.nan, np.nan

    if suggest:
        out.suggestions = _suggestions(X, human, person, cand, S, bad_local, res, pers, protos, strategy, clusters,
                                       labelled_in, vetoed, direct, impostor, col, partners)
        out.suggestions += _names_to_check(X, human, person, fine, protos, strategy, col, direct)
        if neighbours is not None:
            out.suggestions += _chain_questions(person, cand, S, bad_local, col, neighbours, (fine, coarse), photo, good,
                                                partners, out.suggestions, direct=direct, impostor=impostor,
                                                tell_apart=tell_apart)
        out.suggestions = _point_at_labels(X, human, good, out.suggestions)
    return out


def _point_at_labels(X: np.ndarray, human: np.ndarray, good: np.ndarray, asked: list[RawSuggestion]) -> list[RawSuggestion]:
    """Each question about a person, with the face of theirs its evidence points at where it has none yet: the
    person's good human label most like the asked faces as a whole (their mean face). A person answering "is this
    X?" about a child's photo, or about a relative's, answers better beside the photo of X the faces resemble than
    beside X's best portrait. One product per person: the questions' mean faces against that person's labels."""
    from scipy import sparse

    todo = [q for q, r in enumerate(asked) if r.evidence is None and r.person is not None and r.rows]
    if not todo:
        return asked
    labels = np.flatnonzero((human >= 0) & good)
    by_person = {p: rows for p, rows in _rows_by(labels, human[labels])}
    sizes = np.array([len(asked[q].rows) for q in todo])
    faces = np.fromiter((i for q in todo for i in asked[q].rows), dtype=np.int64, count=int(sizes.sum()))
    member = sparse.csr_matrix((np.ones(faces.size, np.float32), faces, np.r_[0, np.cumsum(sizes)]), shape=(len(todo), len(X)))
    M = np.asarray(member @ X)  # each question's faces summed: the direction of its mean face
    out = list(asked)
    for p, at in _rows_by(np.arange(len(todo)), np.array([asked[q].person for q in todo], dtype=np.int64)):
        rows = by_person.get(int(p))
        if rows is None:
            continue
        best = rows[np.argmax(M[at] @ X[rows].T, axis=1)]
        for k, b in zip(at.tolist(), best.tolist()):
            out[todo[k]] = replace(asked[todo[k]], evidence=int(b))
    return out


def _nearer_someone_known_else(X: np.ndarray, human: np.ndarray, person: np.ndarray, photo: np.ndarray | None,
                               rejected: dict[int, set[int]] | None, partners: dict[int, set[int]],
                               runner_up: np.ndarray | None = None,
                               exemplars: Callable[[int], np.ndarray | None] | None = None) -> np.ndarray:
    """Rows named automatically whose nearest known face is someone known not to be their person (rule 7).

    Known not to be person p: the other faces of the photos of p's human labels, the faces rejected for p, the
    faces a person called different from one of p's labels (any quality: a tiny face beside p's label is still not
    p, and this only withholds names), and the human labels of the face's runner-up ``runner_up[row]`` (the named
    person it scores best for below p, :func:`_runner_ups`), as that person's exemplars (``exemplars(q)``: every good
    label up to 16, then 16 spread across them, :func:`assign.build_prototypes`). Known to be p: p's human labels
    (all of them; p's exemplars only rule out, cheaply, the faces already nearer one of them than anything else:
    a face named for a person with 20k labels is compared with those only when it has to be).

    The runner-up's labels are the like-for-like test between two named people: the face was given p by its
    score against p's labels as a whole, yet one of the runner-up's own photos is nearer to it than any of p's. In a
    family library that is a relative between two named relatives (the one named p is most often neither); a face
    that is p is nearer one of p's photos. Measured (bench/households.py): on family libraries it withholds about a
    tenth of the relatives' names left by the other rules; on lfw_dev it changes no figure."""
    n = len(person)
    auto = np.flatnonzero((person >= 0) & (human < 0))
    if auto.size == 0:
        return auto
    named = set(person[auto].tolist())
    not_p: dict[int, set[int]] = defaultdict(set)
    labelled = np.flatnonzero(human >= 0)
    own_labels = labelled[np.isin(human[labelled], list(named))]
    if photo is not None and own_labels.size:
        beside = np.flatnonzero(np.isin(photo, photo[own_labels]))
        by_photo: dict[int, list[int]] = defaultdict(list)
        for j in beside.tolist():
            by_photo[int(photo[j])].append(j)
        for i in own_labels.tolist():
            not_p[int(human[i])].update(j for j in by_photo[int(photo[i])] if human[j] != human[i])
    for i, people in (rejected or {}).items():
        for p in people:
            if p in named:
                not_p[int(p)].add(int(i))
    for a, others in partners.items():
        if human[a] >= 0 and int(human[a]) in named:
            not_p[int(human[a])].update(b for b in others if human[b] != human[a])

    nearest_else = np.full(n, -np.inf, dtype=np.float32)  # per named row: its nearest face known not to be its person
    for p, rows in _rows_by(auto, person[auto]):
        if not_p.get(p):
            nearest_else[rows] = _nearest(X, rows, sorted(not_p[p]))
    if runner_up is not None and exemplars is not None:
        ranked = auto[runner_up[auto] >= 0]
        for q, rows in _rows_by(ranked, runner_up[ranked]):
            E = exemplars(q)
            if E is not None and len(E):
                nearest_else[rows] = np.maximum(nearest_else[rows], (X[rows] @ E.T).max(axis=1))
    asked = auto[np.isfinite(nearest_else[auto])]
    own = dict(_rows_by(own_labels, human[own_labels]))
    held = []
    for p, rows in _rows_by(asked, person[asked]):
        E = exemplars(p) if exemplars is not None else None
        if E is not None and len(E):  # p's exemplars are p's labels: nearer one of them is nearer p's labels already
            rows = rows[nearest_else[rows] > (X[rows] @ E.T).max(axis=1)]
        if rows.size:
            held.append(rows[nearest_else[rows] > _nearest(X, rows, own[p])])
    return np.concatenate(held).astype(np.int64) if held else np.zeros(0, np.int64)


def _exemplars_by_person(protos, pers: np.ndarray) -> Callable[[int], np.ndarray | None]:
    """Person index → that person's exemplar labels (rows of ``protos.exemplars``), grouped once."""
    where = {int(pers[c]): rows for c, rows in _rows_by(np.arange(len(protos.exemplar_owner)), np.asarray(protos.exemplar_owner))}
    return lambda p: protos.exemplars[where[p]] if p in where else None


def _rows_by(rows: np.ndarray, key: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``rows`` split by ``key`` (one entry per distinct key, ascending): one sort, not a mask per key."""
    if rows.size == 0:
        return []
    order = np.argsort(key, kind="stable")
    rows, key = rows[order], key[order]
    cut = np.flatnonzero(np.diff(key)) + 1
    return [(int(k[0]), r) for k, r in zip(np.split(key, cut), np.split(rows, cut))]


def _runner_ups(S: "_Scores", cand: np.ndarray, person: np.ndarray, human: np.ndarray, col: dict[int, int],
                pers: np.ndarray) -> np.ndarray:
    """Per row, the named person its stored scores rank best *below* the one it was named (-1: unnamed, labelled,
    or nobody else stored below it). Below, not merely other: a trained head (rule 8) may name a face for someone
    it scores less for in raw space, and the person raw space preferred is then the one the head overruled, not a
    runner-up. One pass over the sparse scores of the named candidate rows."""
    n = len(person)
    out = np.full(n, -1, np.int64)
    local = np.flatnonzero((person[cand] >= 0) & (human[cand] < 0))
    if local.size == 0:
        return out
    sub = S.m[local]
    row = np.repeat(np.arange(local.size), np.diff(sub.indptr))
    given = np.array([col.get(int(p), -1) for p in person[cand[local]].tolist()], dtype=np.int64)
    own = np.full(local.size, np.inf)  # the named person's stored score (always stored for a name given)
    at = sub.indices == given[row]
    own[row[at]] = sub.data[at]
    vals = np.where(at | (sub.data >= own[row]), -np.inf, sub.data)
    order = np.lexsort((-vals, row))
    first = order[np.r_[0, np.flatnonzero(np.diff(row[order])) + 1]] if order.size else order
    first = first[np.isfinite(vals[first])]
    out[cand[local[row[first]]]] = pers[sub.indices[first]]
    return out


def _nearest(X: np.ndarray, rows: np.ndarray, others: Sequence[int], block: int = 1 << 22) -> np.ndarray:
    """For each of ``rows``, its highest cosine to any of ``others``, in blocks (a person confirmed as a whole group
    may have tens of thousands of labels)."""
    others = np.asarray(others, dtype=np.int64)
    best = np.full(len(rows), -np.inf, dtype=np.float32)
    step_o = max(1, min(len(others), 8192))
    step_r = max(1, block // step_o)
    for lo in range(0, len(rows), step_r):
        r = rows[lo : lo + step_r]
        for olo in range(0, len(others), step_o):
            best[lo : lo + len(r)] = np.maximum(best[lo : lo + len(r)], (X[r] @ X[others[olo : olo + step_o]].T).max(axis=1))
    return best


def _people_by_photo(person: np.ndarray, g: np.ndarray | None, rows: np.ndarray) -> dict[Hashable, set[int]]:
    """photo → the persons the faces ``rows`` (a mask) of that photo hold (empty without photos)."""
    taken: dict[Hashable, set[int]] = defaultdict(set)
    if g is not None:
        for i in np.flatnonzero(rows):
            taken[g[i]].add(int(person[i]))
    return taken


def _group_means(X: np.ndarray, groups_of: dict[int, list[int]], ids: list[int]) -> np.ndarray:
    """The L2-normalised mean face of each group in ``ids`` (float32, in that order)."""
    M = np.stack([X[groups_of[c]].sum(axis=0) for c in ids]).astype(np.float32)
    M /= np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-12)
    return M


def _head_decides(X, human, person, confidence, gap, vetoed, cand, S, bad_local, occupied, g, pers, col, evidence,
                  impostor, coarse, fine, direct, head) -> None:
    """Rule 8 (module docstring), in place: the head's contract (:func:`train.name_faces`) on top of the raw rules.

    * The head's bar is never below the run's direct bar; a person is a candidate only above the impostor bar in
      *raw* space and when admissible (not rejected, not already in the photo).
    * A face the raw rules named may be moved to another candidate; a face they left unnamed may only be *lifted*,
      and only when exactly one named person clears the head's raw floor for it, counted before any photo rule or
      rejection (the head is never the tie-breaker between people the raw rules could not separate).
    * Every name given here passes rule 5's group tests (:func:`_someone_else`) in both clusterings, and one below
      the direct bar also needs rule 6's fine-link tie (so never in an incremental run, which has no fine
      clustering); rule 7 runs after it. Names vouch for nobody."""
    owner = [col[int(human[i])] for i in evidence]
    taken = _people_by_photo(person, g, person >= 0)
    choice = np.full(len(cand), -1, np.int64)
    chosen_raw = np.full(len(cand), -np.inf)
    for block in S.blocks(None if g is None else g[cand].tolist()):
        raw, cols = S.dense(block)
        if not len(cols):
            continue
        candidates = (raw >= head.raw_floor).sum(axis=1)
        where = {c: j for j, c in enumerate(cols.tolist())}
        for r, local in enumerate(block.tolist()):
            banned = set(bad_local.get(local, ())) | (set(occupied.get(g[cand[local]], ())) if g is not None else set())
            raw[r, [where[c] for c in banned if c in where]] = -1.0
        H = np.asarray(head.named_person_scores(X[cand[block]], X[evidence], owner, len(pers)), dtype=np.float32)[:, cols]
        picked, _ = head.name(raw.astype(np.float32), H, raw_bar=direct)
        for r, local in enumerate(block.tolist()):
            if picked[r] < 0 or (person[cand[local]] < 0 and candidates[r] != 1):
                continue
            choice[local], chosen_raw[local] = cols[picked[r]], raw[r, picked[r]]
    for local, i in enumerate(cand.tolist()):
        c = int(choice[local])
        if c < 0 or vetoed[i] or int(pers[c]) == person[i] or chosen_raw[local] < impostor:
            continue
        p = int(pers[c])
        if g is not None and p in taken[g[i]]:
            continue
        if _someone_else(coarse, fine, i, p, c, direct):
            continue
        if chosen_raw[local] < direct and not _linked_at_fine_link(fine, i, p):
            continue
        if g is not None:
            taken[g[i]].discard(int(person[i]))
            taken[g[i]].add(p)
        person[i] = p
        confidence[i] = float(chosen_raw[local])
        gap[i] = S.standing(local, c, len(pers), bad_local.get(local, ()))[1]


def _suggestions(X, human, person, cand, S, bad_local, res, pers, protos, strategy, clusters, labelled_in, vetoed,
                 direct, impostor, col, partners) -> list[RawSuggestion]:
    """Questions for a person, from evidence that was suggestive but not enough (see the module docstring)."""
    out: list[RawSuggestion] = []
    local_of = {int(i): local for local, i in enumerate(cand.tolist())}
    unnamed = person < 0
    # Unknown groups = clusters of everyone restricted to the faces still without a name.
    groups_of: dict[int, list[int]] = defaultdict(list)
    if clusters is not None:
        for i in np.flatnonzero(unnamed & (clusters >= 0)):
            groups_of[int(clusters[i])].append(int(i))
    in_group = {i for rows in groups_of.values() if len(rows) >= 2 for i in rows}

    # Each group's mean face against every person, in one product (a library has thousands of groups).
    multi = [c for c, rows in groups_of.items() if len(rows) >= 2]
    M = _group_means(X, groups_of, multi) if multi else None
    if multi:
        G = _Scores(assign_mod.candidate_scores(protos, M, strategy, floor=S.floor), S.floor)
        group_row = {c: r for r, c in enumerate(multi)}

    def banned_for(c: int) -> set[int]:
        """Persons any face of group ``c`` was rejected for (or is a different person from)."""
        return {b for i in groups_of[c] if i in local_of for b in bad_local.get(local_of[i], ())}

    # Groups: one question per unknown group whose mean face reaches the impostor bar for one person, or that
    # holds one person's labels (a chain: the group knows, the faces alone did not clear the bar). A label-less
    # group's mean face picks the candidate, but its evidence (the score, hence its place in the queue) is the
    # median of its faces' own scores: a group's mean face averages its noise away and sits closer to anyone alike
    # than its faces do (rule 6: a look-alike's group at 0.43-0.48 by its mean, 0.30 by its faces), and the bars
    # are single-face measures.
    pending: list[tuple[int, int]] = []  # (group, candidate column) of label-less groups, scored by their faces below
    for c in multi:
        rows = groups_of[c]
        holders = labelled_in.get(c, set())
        banned = banned_for(c)
        if len(holders) == 1 and next(iter(holders)) in col:
            c_p = col[next(iter(holders))]
            if c_p in banned:
                continue
            m = M[group_row[c]][None, :].astype(np.float32)  # the score itself, even below the floor: the group knows
            score = float(assign_mod.pair_scores(protos, m, np.zeros(1, np.int64), np.array([c_p]), strategy)[0])
            floor = 0.0  # the labels in the group are the evidence, not how far the mean face got
        else:  # a label-less group: asked below, once its faces are scored
            cols, vals = G.row(group_row[c], banned)
            if not len(cols):
                continue
            c_p = int(cols[np.argmax(vals)])
            if vals.max() >= impostor:
                pending.append((c, c_p))
            continue
        out.append(RawSuggestion("cluster_is_person", tuple(rows), person=int(pers[c_p]), score=score, bar=direct, floor=floor,
                                 cluster=c))
    if pending:
        sizes = [len(groups_of[c]) for c, _ in pending]
        f = np.concatenate([groups_of[c] for c, _ in pending])
        each = assign_mod.pair_scores(protos, X, f, np.repeat([c_p for _, c_p in pending], sizes), strategy)
        for (c, c_p), v in zip(pending, np.split(each, np.cumsum(sizes)[:-1])):
            out.append(RawSuggestion("cluster_is_person", tuple(groups_of[c]), person=int(pers[c_p]), score=float(np.median(v)),
                                     bar=direct, floor=impostor, cluster=c))

    # Single faces: between the bars, or vetoed by their cluster without forming a group of their own.
    for i in np.flatnonzero(unnamed).tolist():
        if i in in_group or i not in local_of:
            continue
        cols, vals = S.row(local_of[i], bad_local.get(local_of[i], ()))
        if not len(cols):
            continue
        c_p = int(cols[np.argmax(vals)])
        if vals.max() >= impostor:
            out.append(RawSuggestion("face_is_person", (i,), person=int(pers[c_p]), score=float(vals.max()), bar=direct, floor=impostor,
                                     cluster=int(clusters[i]) if clusters is not None and clusters[i] >= 0 else None))

    # Two people who may be one: their labels' centroids at the direct bar.
    if len(protos) > 1:
        from face_pipeline.core.clustering.neighbours import neighbour_graph

        idx, sims = neighbour_graph(protos.centroids, min(SAME_PERSON_NEIGHBOURS, len(protos) - 1), floor=direct)
        pairs = {(min(a, int(b)), max(a, int(b))): float(v) for a in range(len(protos))
                 for b, v in zip(idx[a], sims[a]) if b >= 0 and v >= direct}
        for (a, b), v in sorted(pairs.items()):
            out.append(RawSuggestion("same_person", (), person=int(pers[a]), other_person=int(pers[b]), score=v, bar=direct))
    if clusters is not None:
        out += _same_person_clusters(X, clusters, person, direct, groups_of, partners, means=M)
    return out


def _names_to_check(X: np.ndarray, human: np.ndarray, person: np.ndarray, fine: _EvidenceView | None, protos, strategy: str,
                    col: dict[int, int], direct: float) -> list[RawSuggestion]:
    """"Are these X?" about names automation gave on the weakest tie: faces named X whose stricter group holds no
    label (their coarse group held only X's labels, so rule 5 let their own scores name them). A relative's group
    inside a person's coarse group looks like the person's own second group by every figure (synthetic family
    crops: such groups held two thirds of the relatives' names left, lfw_dev's Tim Henman-like groups are the
    person), so the names stand and one answer settles the group: yes makes them human labels, no "not this person"
    for every face (and they are never given that name again). One question per stricter group and person; never in
    an incremental run (no stricter clustering): the next full run asks."""
    if fine is None:
        return []
    auto = np.flatnonzero((person >= 0) & (human < 0) & (fine.clusters >= 0))
    if auto.size == 0:
        return []
    ids, counts = np.unique(fine.clusters[fine.clusters >= 0], return_counts=True)
    labelled = np.array([c for c, held in fine.holders.items() if held], dtype=np.int64)
    c = fine.clusters[auto]
    weak = auto[np.isin(c, ids[counts >= MIN_EVIDENCE_CLUSTER]) & ~np.isin(c, labelled)]
    weak = weak[np.isin(person[weak], list(col))]
    if weak.size == 0:
        return []
    # one question per (stricter group, person): the rows grouped by one sort, every group's mean face scored at once
    pair = fine.clusters[weak] * (int(person[weak].max()) + 1) + person[weak]
    groups = [g for _, g in _rows_by(weak, pair) if g.size >= MIN_EVIDENCE_CLUSTER]
    if not groups:
        return []
    label = np.repeat(np.arange(len(groups)), [g.size for g in groups])
    _, M, _ = _mean_faces(X[np.concatenate(groups)], label)
    who = np.array([col[int(person[g[0]])] for g in groups], dtype=np.int64)
    scores = assign_mod.pair_scores(protos, M, np.arange(len(groups)), who, strategy)
    return [RawSuggestion("check_names", tuple(g.tolist()), person=int(person[g[0]]), score=float(v), bar=direct)
            for g, v in zip(groups, scores)]


def _chain_questions(person: np.ndarray, cand: np.ndarray, S: "_Scores", bad_local: dict[int, set[int]], col: dict[int, int],
                     neighbours: tuple[np.ndarray, np.ndarray], views: Sequence["_EvidenceView | None"], photo: np.ndarray | None,
                     good: np.ndarray, partners: dict[int, set[int]], asked: list[RawSuggestion], *, direct: float,
                     impostor: float, tell_apart: float) -> list[RawSuggestion]:
    """"Are these X?" about a person's photos that the person's own photos lead to one step at a time: the years.

    A child's face is far from the same person's adult labels (and near every other child's), so no score against
    the labels can name it or even ask about it; what ties it to the person is a chain of their own photos across
    the years, each a close neighbour of the next. Rule 2 forbids naming along a chain (faces named in a run vouch
    for nobody), so a chain becomes a question, one step at a time: an unnamed face whose nearest neighbours
    include a good face of person X (a human label, or a face named X whose stricter group holds X's labels: a
    name given on the face's own score alone is itself in question) at the
    stricter link :data:`FINE_LINK` or above: above where relatives meet (0.4-0.5), as the stricter clustering
    is. At the direct bar instead (seed 0), synthetic family crops were asked 202 steps, 32 of them right, the
    ageing library 91 (58 right) and lfw_dev 3 (1 right); at the stricter link 36 (8), 15 (15) and none. A person
    confirms the step (yes makes the faces labels), and the next organise names the ages those labels now reach,
    or asks about the step after. Wrong steps cost one "no", which rule 7 then reads as known not-X.

    What a step is not: two faces of one photo (two people, however alike: siblings photographed together); a pair
    a person called different people; a poor face (rule 4); a face between two people, where a face of another
    person (any face with their name) or the face's own score for another person comes within ``tell_apart`` of
    the step (what chance gives between two label sets of one person). A model nobody measured (``tell_apart``
    0, a learned space) asks no chain questions.

    The question is about the face's stricter group (``views``: the stricter clustering, else the one at the link,
    else each face alone; a face alone at that link is asked about alone): a coarse group of children holds many
    people, the stricter one rarely. Where the group is between two people, or a person said one of its faces is not
    X (it is not one person, then), each of its faces is asked about on its own step; a face rejected for X never
    is. Left out of a question: faces in a photo that holds X already, and faces whose group (at either link) holds
    other people's labels and not X's (rule 5); none is asked about when one of them scores as near another person
    as the step. Where a question about mostly the same faces
    and X is asked already (their larger group, on its faces' scores), the step lifts that question's evidence to
    the step's (``asked`` is updated in place) instead of asking twice; a step inside a larger mixed group is asked
    on its own.

    ``neighbours`` is the kNN graph the clustering used (edges in both directions are read); cost O(N k)."""
    if tell_apart <= 0:
        return []
    idx, sims = neighbours
    n, k = idx.shape
    unnamed = np.zeros(n, bool)
    unnamed[cand[person[cand] < 0]] = True
    known = person >= 0  # every named face competes (a person whose labels are all poor too: rule 4 keeps no prototype)
    starts = known & np.isin(person, list(col)) & good  # ... but only a good face whose name is not in question starts
    starts[[i for r in asked if r.kind == "check_names" for i in r.rows]] = False
    fine = views[0] if views else None
    if fine is not None:  # a name given on the face's own score, its stricter group holding none of X's labels, is weak
        auto = cand[person[cand] >= 0]
        starts[[i for i in auto.tolist() if not _holds_labels_of(fine, i, int(person[i]))]] = False
    a = np.repeat(np.arange(n), k)
    b, v = idx.ravel(), sims.ravel()
    keep = (b >= 0) & (v >= FINE_LINK - tell_apart)  # competitors within tell_apart of a step count too
    a, b, v = a[keep], b[keep], v[keep]
    if photo is not None:
        apart = photo[a] != photo[b]
        a, b, v = a[apart], b[apart], v[apart]
    fwd, back = unnamed[a] & known[b], known[a] & unnamed[b]
    face = np.concatenate([a[fwd], b[back]])
    other = np.concatenate([b[fwd], a[back]])
    link = np.concatenate([v[fwd], v[back]]).astype(np.float64)
    if partners:  # "different people" answers hold, whoever named the other face
        said = np.array([int(o) in partners.get(int(f), ()) for f, o in zip(face, other)], bool)
        face, other, link = face[~said], other[~said], link[~said]
    if face.size == 0 or not (starts[other] & (link >= FINE_LINK)).any():
        return []
    to, starter = person[other], starts[other]
    local_of = {int(i): local for local, i in enumerate(cand.tolist())}
    grouping = next((v.clusters for v in views if v is not None), None)
    unit = np.where(grouping[face] >= 0, grouping[face], -1 - face) if grouping is not None else -1 - face
    members = {}
    if grouping is not None:
        free = np.flatnonzero(unnamed & (grouping >= 0))
        members = {c: rows for c, rows in _rows_by(free, grouping[free])}
    in_photo = _people_by_photo(person, photo, person >= 0)

    def someone_elses(f: int, p: int) -> bool:
        """The face's group, at either link, holds other people's labels and not ``p``'s (rule 5)."""
        for v in views:
            if v is not None and v.clusters[f] >= 0:
                held = v.holders.get(int(v.clusters[f]))
                if held and p not in held:
                    return True
        return False

    def step(rows: np.ndarray, faces: np.ndarray) -> RawSuggestion | str | None:
        """The question about ``faces`` the edges ``rows`` make; "between" where two people's faces are as near,
        "mixed" where a person said one of the group is not X."""
        started = rows[starter[rows]]
        if not started.size or link[started].max() < FINE_LINK:
            return None
        at = started[np.argmax(link[started])]
        p, s = int(to[at]), float(link[at])
        rivals = rows[to[rows] != p]
        if rivals.size and link[rivals].max() >= s - tell_apart:
            return "between"
        c_p = col[p]
        if any(c_p in bad_local.get(local_of[int(f)], ()) for f in faces):
            # someone said one of these is not X: not asked about X again as a whole, nor that face at all
            return "mixed" if len(faces) > 1 else None
        own = [v for f in faces for c, v in zip(*S.row(local_of[int(f)])) if c != c_p]
        if own and max(own) >= s - tell_apart:
            return None  # the faces' own scores for someone else are as near as the step
        faces = np.array([f for f in faces if (photo is None or p not in in_photo.get(photo[f], ()))
                          and not someone_elses(int(f), p)], dtype=np.int64)
        if faces.size == 0:
            return None
        kind = "cluster_is_person" if faces.size > 1 else "face_is_person"
        return RawSuggestion(kind, tuple(int(f) for f in faces), person=p, score=s, bar=direct, floor=impostor,
                             evidence=int(other[at]))

    covering: dict[tuple[int, int], int] = {(int(i), r.person): q for q, r in enumerate(asked)
                                            if r.kind in ("cluster_is_person", "face_is_person") for i in r.rows}
    out = []
    for u, rows in _rows_by(np.arange(face.size), unit):
        found = [step(rows, members[u] if u >= 0 else np.array([-1 - u]))]
        if found[0] in ("between", "mixed") and u >= 0:  # each face on its own step (a group of many children)
            found = [step(r, np.array([f])) for f, r in _rows_by(rows, face[rows])]
        for q in found:
            if not isinstance(q, RawSuggestion):
                continue
            over = {covering.get((int(f), q.person)) for f in q.rows}
            if len(over) == 1 and None not in over:
                (n_q,) = over
                if 2 * len(q.rows) > len(asked[n_q].rows):  # the step is most of a question asked already: lift it
                    if asked[n_q].score < q.score:
                        asked[n_q] = replace(asked[n_q], score=q.score, floor=min(asked[n_q].floor, impostor), evidence=q.evidence)
                    continue
            out.append(q)
    return out


def _same_person_clusters(X: np.ndarray, clusters: np.ndarray, person: np.ndarray, direct: float,
                          groups_of: dict[int, list[int]] | None = None, partners: dict[int, set[int]] | None = None,
                          means: np.ndarray | None = None) -> list[RawSuggestion]:
    """Two unknown groups the clustering kept apart whose mean faces still reach the direct bar: "same person?".

    ``means``: the groups' mean faces when the caller has them already (:func:`_group_means` of the groups of at
    least two faces, in ``groups_of`` order)."""
    from face_pipeline.core.clustering.neighbours import neighbour_graph

    if groups_of is None:
        groups_of = defaultdict(list)
        for i in np.flatnonzero((person < 0) & (np.asarray(clusters) >= 0)):
            groups_of[int(clusters[i])].append(int(i))
    ids = [c for c, rows in groups_of.items() if len(rows) >= 2]
    if len(ids) < 2:
        return []
    M = _group_means(X, groups_of, ids) if means is None else means
    idx, sims = neighbour_graph(M, min(SAME_PERSON_NEIGHBOURS, len(ids) - 1), floor=direct)
    # Two groups a person already called different people (a cannot-link between their faces) are not asked again.
    group_of_row = {i: n for n, c in enumerate(ids) for i in groups_of[c]}
    answered = {(min(group_of_row[a], group_of_row[b]), max(group_of_row[a], group_of_row[b]))
                for a, others in (partners or {}).items() if a in group_of_row for b in others if b in group_of_row}
    pairs = sorted({(float(s), min(a, b), max(a, b)) for a in range(len(ids)) for b, s in zip(idx[a].tolist(), sims[a].tolist())
                    if b >= 0 and s >= direct and (min(a, b), max(a, b)) not in answered}, reverse=True)
    # One open question per group at a time, its closest partner first: a question lists every face of both groups
    # (an answer applies to all of them), and asking about one large group five times over filled the queue with
    # millions of face rows at 200k faces. The answered pair is never asked again, so the next run asks the next.
    out, asked = [], set()
    for s, a, b in pairs:
        if a in asked or b in asked:
            continue
        asked |= {a, b}
        out.append(RawSuggestion("same_person", tuple(groups_of[ids[a]]), other_rows=tuple(groups_of[ids[b]]), score=s,
                                 bar=direct, cluster=ids[a], other_cluster=ids[b]))
    return out


class _Scores:
    """Scores of faces (rows) against named people (columns), stored only at or above ``floor``
    (:func:`assign.candidate_scores`). An entry not stored is below the floor, so below every bar a rule reads
    it against; where a value must stand in for it (a margin), the floor does: margins are then lower bounds."""

    def __init__(self, matrix, floor: float) -> None:
        self.m = matrix.tocsr()
        self.floor = float(floor)

    def row(self, r: int, banned=()) -> tuple[np.ndarray, np.ndarray]:
        """(columns, scores) stored for row ``r``, ``banned`` columns left out."""
        a, b = self.m.indptr[r], self.m.indptr[r + 1]
        cols, vals = self.m.indices[a:b], self.m.data[a:b].astype(np.float64)
        if banned and len(cols):
            keep = ~np.isin(cols, list(banned))
            cols, vals = cols[keep], vals[keep]
        return cols, vals

    def get(self, r: int, c: int) -> float:
        cols, vals = self.row(r)
        at = np.flatnonzero(cols == c)
        return float(vals[at[0]]) if at.size else -np.inf

    def standing(self, r: int, c: int, n_people: int, banned=()) -> tuple[float, float, bool]:
        """Column ``c`` in row ``r``, ``banned`` columns left out: (its score, its :meth:`lead` over the rest, whether
        it is the row's best). Not stored (below the floor): (-inf, 0.0, False)."""
        cols, vals = self.row(r, banned)
        at = np.flatnonzero(cols == c)
        if at.size == 0:
            return -np.inf, 0.0, False
        return float(vals[at[0]]), self.lead(vals, int(at[0]), n_people), int(cols[np.argmax(vals)]) == c

    def lead(self, vals: np.ndarray, at: int, n_people: int) -> float:
        """How far entry ``at`` of a row leads the rest (the runner-up, or the floor for people not stored)."""
        if n_people <= 1:
            return 1.0
        others = np.delete(vals, at)
        return float(vals[at] - max(others.max() if others.size else -np.inf, self.floor))

    def blocks(self, groups: Sequence | None, size: int = 2048) -> Iterable[np.ndarray]:
        """Row indices in blocks of about ``size`` that never split the faces of one photo."""
        n = self.m.shape[0]
        if n == 0:
            return
        if groups is None:
            yield from (np.arange(lo, min(n, lo + size)) for lo in range(0, n, size))
            return
        codes: dict = {}
        key = np.array([codes.setdefault(x, len(codes)) for x in groups], dtype=np.int64)
        order = np.argsort(key, kind="stable")
        start = 0
        for end in [*(np.flatnonzero(np.diff(key[order])) + 1).tolist(), n]:  # photo boundaries
            if end - start >= size or end == n:
                yield order[start:end]
                start = end

    def dense(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores (len(block), K) float64, the K columns any row of the block stores); not stored = below floor."""
        sub = self.m[block]
        cols = np.unique(sub.indices)
        out = np.full((len(block), len(cols)), self.floor - 1e-6)
        if len(cols):
            sub = sub[:, cols].tocoo()
            out[sub.row, sub.col] = sub.data
        return out, cols

    def assign(self, *, threshold: float, margin: float, groups: Sequence | None, rejected: dict[int, set[int]],
               occupied: dict | None):
        """:func:`assign.assign_scores` block by block (a photo's faces are matched jointly, so blocks keep
        photos whole); person indices are columns of the full matrix."""
        n = self.m.shape[0]
        person = np.full(n, -1, np.int64)
        conf = np.full(n, np.nan)
        gaps = np.full(n, np.nan)
        for block in self.blocks(groups):
            D, cols = self.dense(block)
            if not len(cols):
                continue
            # A column standing for everyone not stored (below the floor, so below the threshold: never matched) keeps
            # every runner-up, and so every margin, at least as strict as the dense matrix's.
            D = np.hstack([D, np.full((len(block), 1), self.floor - 1e-6)])
            where = {c: j for j, c in enumerate(cols.tolist())}
            sub_rej = {r: {where[c] for c in rejected[local] if c in where} for r, local in enumerate(block.tolist()) if local in rejected}
            sub_groups = None if groups is None else [groups[local] for local in block.tolist()]
            sub_occ = None
            if occupied is not None and sub_groups is not None:
                sub_occ = {x: {where[c] for c in occupied[x] if c in where} for x in set(sub_groups) if x in occupied}
            res = assign_mod.assign_scores(D, threshold=threshold, margin=margin, groups=sub_groups, rejected=sub_rej, occupied=sub_occ)
            got = (res.person_index >= 0) & (res.person_index < len(cols))
            person[block[got]] = cols[res.person_index[got]]
            conf[block] = res.confidence
            gaps[block] = res.margin
        return _Assigned(person, conf, gaps)


@dataclass
class _Assigned:
    person_index: np.ndarray
    confidence: np.ndarray
    margin: np.ndarray


@dataclass
class _EvidenceView:
    """One clustering of everyone seen as evidence: which persons' labels each group holds, its size, and its
    mean face's scores against named people (stored at or above the floor only)."""

    clusters: np.ndarray
    holders: dict[int, set[int]]
    size: dict[int, int]
    row_of: dict[int, int]
    scores: _Scores
    clearing: object = None  # sparse (group row, person column) → unlabelled faces of the group at the direct bar
    beside: dict[int, set[int]] = field(default_factory=dict)  # person → groups seen in a photo beside their labels' groups
    asking: np.ndarray | None = None  # unlabelled faces per group row
    _members: Callable[[int], np.ndarray] | None = field(default=None, repr=False)

    def score(self, c: int, c_p: int) -> float:
        """Group ``c``'s mean face against person column ``c_p`` (-inf: below the floor)."""
        return self.scores.get(self.row_of[c], c_p) if c in self.row_of else -np.inf

    def share_clearing(self, c: int, c_p: int) -> float:
        """Share of group ``c``'s unlabelled faces whose own score against person column ``c_p`` clears the direct
        bar (1.0 where not computed)."""
        if self.clearing is None or c not in self.row_of:
            return 1.0
        r = self.row_of[c]
        a, b = self.clearing.indptr[r], self.clearing.indptr[r + 1]
        at = np.flatnonzero(self.clearing.indices[a:b] == c_p)
        return (float(self.clearing.data[a + at[0]]) if at.size else 0.0) / max(1, int(self.asking[r]))

    def members(self, c: int) -> np.ndarray:
        """Rows of group ``c`` (the faces sorted by group once, on first use)."""
        if self._members is None:
            from face_pipeline.core.clustering.methods import _members_of  # scipy: only organise pays for it

            self._members = _members_of(self.clusters)
        return self._members(c)


def _view(X, clusters, human, evidence, protos, strategy, floor, cand, S: _Scores, direct: float) -> _EvidenceView | None:
    """The evidence view of one clustering. Sizes and mean faces are only needed for the groups candidate faces
    sit in: an incremental run (a batch of 1,000 in a library of a million) computes those few, not all."""
    if clusters is None:
        return None
    clusters = np.asarray(clusters, dtype=np.int64)
    holders: dict[int, set[int]] = defaultdict(set)
    for i in evidence:
        if clusters[i] >= 0:
            holders[int(clusters[i])].add(int(human[i]))
    asked = np.unique(clusters[cand])
    ids, mean, size = _mean_faces(X, np.where(np.isin(clusters, asked[asked >= 0]), clusters, -1))
    scores = _Scores(assign_mod.candidate_scores(protos, mean, strategy, floor=floor), floor)
    row_of = {int(c): r for r, c in enumerate(ids.tolist())}
    # Per group: how many of its unlabelled faces clear the direct bar for each person on their own. The candidates'
    # scores are at hand; an incremental run also scores the group's other unlabelled faces, so that a batch of one
    # face is not a group of its own.
    from scipy import sparse

    def per_group(rows: np.ndarray, scores) -> tuple[object, np.ndarray]:
        at = np.searchsorted(ids, clusters[rows])
        inside = np.flatnonzero((at < len(ids)) & (ids[np.minimum(at, len(ids) - 1)] == clusters[rows])) if len(ids) else at[:0]
        M = sparse.csr_matrix((np.ones(inside.size), (at[inside], inside)), shape=(len(ids), len(rows)))
        clears = scores.tocsr().copy()
        clears.data = (clears.data >= direct).astype(np.float64)
        clears.eliminate_zeros()
        return M @ clears, np.bincount(at[inside], minlength=len(ids))

    clearing, asking = per_group(cand, S.m)
    others = np.setdiff1d(np.flatnonzero(np.isin(clusters, ids) & (human < 0)), cand)
    if others.size:
        more, n_more = per_group(others, assign_mod.candidate_scores(protos, X[others], strategy, floor=direct))
        clearing, asking = clearing + more, asking + n_more
    return _EvidenceView(clusters, holders, dict(zip(ids.tolist(), size.tolist())), row_of, scores,
                         clearing=sparse.csr_matrix(clearing), asking=asking)


def _someone_else(coarse: _EvidenceView | None, fine: _EvidenceView | None, i: int, p: int, c_p: int, direct: float) -> bool:
    """Rule 5 for face ``i`` and person ``p`` (prototype column ``c_p``), in both clusterings.

    A group that holds human labels of others but not of ``p`` vetoes. A group that holds no label vetoes when, as
    a whole, it is not ``p``: its mean face stays under the direct bar, or fewer than half of its faces clear the
    direct bar on their own (its unlabelled faces, each against ``p``'s labels). The second asks the group the same question as its single faces, like for like: a
    group's mean face averages its noise away and sits closer to anyone alike (a relative's tight group clears the
    bar by its mean while most of its faces do not), whereas a group that is ``p`` has most of its faces at the bar,
    as ``p``'s faces do. A face whose stricter (fine) group holds ``p``'s labels is tied to them and no label-less
    group's figures veto it."""
    views = [v for v in (coarse, fine) if v is not None]
    tied = _holds_labels_of(fine, i, p)
    if _fine_group_of_its_own(coarse, fine, i, p):
        return True
    for v in views:
        c = int(v.clusters[i])
        if c < 0:
            continue
        holders = v.holders.get(c, set())
        if holders:
            if p not in holders:
                return True
            continue
        if tied or v.size.get(c, 0) < MIN_EVIDENCE_CLUSTER:
            continue
        if v.score(c, c_p) < direct or v.share_clearing(c, c_p) < MAJORITY or c in v.beside.get(p, ()):
            return True
    return False


def _holds_labels_of(v: _EvidenceView | None, i: int, p: int) -> bool:
    """Face ``i``'s group in clustering ``v`` holds human labels of person ``p`` (others' too, maybe)."""
    return v is not None and v.clusters[i] >= 0 and p in v.holders.get(int(v.clusters[i]), ())


def _fine_group_of_its_own(coarse: _EvidenceView | None, fine: _EvidenceView | None, i: int, p: int) -> bool:
    """Face ``i`` sits in a stricter (fine) group that holds no label, and nothing but its own score ties that group
    to ``p``: its coarse group is not ``p``'s alone (it holds no label, or labels of several people).

    At the fine link the group is a person of its own; only a coarse group that holds ``p``'s labels and nobody
    else's says which person that may be. A coarse group holding several people's labels has merged different people
    at the link (in a family library: the family), and one holding none says nothing, so the face's own score is all
    that is left, and for a relative that score lies in the same 0.40-0.50 as the person's own faces. Its faces are
    asked about (with the rest of their coarse group's unnamed faces, or one by one), never named. Measured: in
    synthetic family libraries of single-face photos (bench/households.py, no family photos, so no photo rule can
    help) it took the relatives' faces named from ~580 to ~340 per library (12.2 % -> 7.2 %) for known recall
    0.962 -> 0.960; on lfw_dev, in every split, no face was named there at all (bench/quality.py): the cost is nil
    where nobody is related.

    Only a full run has a stricter clustering: an incremental run may name such a face on its own score, and the next
    full run takes the name back and asks. Vetoing in a batch every face that joins an unknown cluster was tried and
    dropped: right after a user labels one face of a cluster, its cluster-mates are still an unknown cluster until
    the next full run, and their new photos went unnamed (a CLI-only home has no nightly run)."""
    if fine is None:
        return False
    cf = int(fine.clusters[i])
    if cf < 0 or fine.holders.get(cf) or fine.size.get(cf, 0) < MIN_EVIDENCE_CLUSTER:
        return False
    cc = -1 if coarse is None else int(coarse.clusters[i])
    return cc < 0 or coarse.holders.get(cc, set()) != {p}


def _co_holders(coarse: _EvidenceView | None, fine: _EvidenceView | None, i: int, p: int) -> set[int]:
    """The other people whose human labels share face ``i``'s group with ``p``'s, at either link: the clustering could
    not part them from ``p`` (in a family library, relatives; rule 5's last bullet)."""
    out: set[int] = set()
    for v in (coarse, fine):
        if v is not None and v.clusters[i] >= 0:
            holders = v.holders.get(int(v.clusters[i]), set())
            if p in holders:
                out |= holders - {p}
    return out


def _too_close_to_call(S: "_Scores", local: int, score: float, others: set[int], col: dict[int, int], tell_apart: float) -> bool:
    """Rule 5's last bullet: the face (candidate ``local``, ``score`` for its person) leads the best of ``others`` (the
    people the clustering could not part from its person, :func:`_co_holders`) by less than chance gives between
    two label sets of one person (``ModelBars.tell_apart``), so the face cannot tell the two apart either. A co-holder
    not stored is below the floor, which then stands for them. Measured (bench/households.py): in synthetic family
    libraries of single-face photos it took the relatives' faces named from ~310 to ~206 per library for known
    recall 0.955 -> 0.944 (family photos as well: ~56 -> ~47); on lfw_dev no named face sits in such a group
    (bench/quality.py)."""
    if tell_apart <= 0 or not others:
        return False
    cols, vals = S.row(local)
    rivals = [c for c in (col.get(q) for q in others) if c is not None]
    stored = vals[np.isin(cols, rivals)] if len(cols) and rivals else vals[:0]
    rival = float(stored.max()) if stored.size else S.floor
    return score - rival < tell_apart


def _seen_beside(v: _EvidenceView, photo: np.ndarray) -> dict[int, set[int]]:
    """Person → the groups with a face in the same photo as a face of a group holding that person's labels.

    Two faces of one photo are two people, and a group is mostly one person, so a group seen beside a person's
    labelled group is someone else: in a family library, the relatives who stand next to the person in family
    photos. Only groups that hold human labels are asked (in an incremental run the groups are people, named ones
    included, so there a named group may veto; that only withholds names)."""
    from scipy import sparse

    if not v.holders:
        return {}
    grouped = np.flatnonzero(v.clusters >= 0)
    _, pcode = np.unique(photo[grouped], return_inverse=True)
    gids, gcode = np.unique(v.clusters[grouped], return_inverse=True)
    # group × photo incidence, then group × group co-occurrence; a photo never holds two faces of one group
    # (clustering keeps a photo's faces apart), so the diagonal counts nothing but is dropped anyway.
    A = sparse.csr_matrix((np.ones(grouped.size), (gcode.ravel(), pcode.ravel())), shape=(gids.size, int(pcode.max()) + 1))
    labelled = [c for c in v.holders if c >= 0]
    rows = np.searchsorted(gids, labelled)
    B = (A[rows] @ A.T).tocsr()
    out: dict[int, set[int]] = defaultdict(set)
    for k, c in enumerate(labelled):
        near = gids[B.indices[B.indptr[k] : B.indptr[k + 1]]]
        near = {int(x) for x in near if x != c}
        for p in v.holders[c]:
            out[p] |= near
    return out


def _group_holder(coarse: _EvidenceView, fine: _EvidenceView | None, i: int) -> int | None:
    """The one person whose human labels tie face ``i``'s group, for rule 6, or None. Its coarse group holds that
    person's labels and nobody else's; or it holds no label while the face's fine group holds that person's labels
    and nobody else's. The second is the same evidence, only tighter: the two clusterings are run apart, and Chinese
    Whispers at the coarse link can cut a person's faces in two where the stricter link keeps them with the label
    (lfw_dev: 6 of Andy Roddick's 14 photos, at K=1). A coarse group that holds no label and no fine tie to one
    stays a question."""
    holders = coarse.holders.get(int(coarse.clusters[i]), set())
    if not holders and fine is not None and fine.clusters[i] >= 0:
        holders = fine.holders.get(int(fine.clusters[i]), set())
    return next(iter(holders)) if len(holders) == 1 else None


def _linked_at_fine_link(v: _EvidenceView | None, i: int, p: int) -> bool:
    """Rule 6's second guard: face ``i`` is tied to person ``p`` at the stricter link too — its fine group holds
    ``p``'s labels and nobody else's. A face alone at the fine link reached ``p``'s group only through 0.4-0.5
    edges, where relatives meet; a fine group of its own that holds no label may be a relative's, however close its
    mean face is (rule 6's docstring). Without a fine clustering (an incremental run) nothing ties it: the nightly
    full run decides."""
    if v is None:
        return False
    c = int(v.clusters[i])
    if c < 0:
        return False
    return v.holders.get(c, set()) == {p}


class _PoorFaceTies:
    """Rule 6's fine-link tie for poor faces (below the model's ``fine_link_quality``), which are often alone at the
    fine link when they are the person: such a face, alone there, is tied to person ``p`` when the rest of its coarse
    group, as a whole (its mean face, the face's own photo left out), clears the direct bar for it, and the face of
    another photo it is most like in that group is ``p``'s human label (one good enough to be evidence, rule 4) or,
    unlabelled, is itself tied to ``p`` at the fine link. Only human labels tie: no name given in this run vouches.
    The mean face is what tells a relative's poor face apart: it reaches the person's group through its few nearest
    faces, which the nearest-face test alone would accept, while the group as a whole does not claim it (synthetic
    families: relatives seen in two poor photos, brothers' 0.30 cosine across). A poor face in a stricter group of
    its own is judged by that group (:func:`_linked_at_fine_link`), never here.

    Asked once, for every face that passed the rest of rule 6: nearest faces are found group by group, one matrix
    product per block of asking faces against the group gathered once, so a group of 100k faces with a few asking
    faces costs one pass."""

    BLOCK = 1 << 22  # similarities per block (16 MB of float32)

    def __init__(self, X: np.ndarray, coarse: _EvidenceView, fine: _EvidenceView | None, human: np.ndarray,
                 good: np.ndarray, photo: np.ndarray | None, poor: np.ndarray) -> None:
        self.X, self.coarse, self.fine, self.human, self.good, self.photo, self.poor = X, coarse, fine, human, good, photo, poor

    def may_ask(self, i: int) -> bool:
        """Face ``i`` is poor and alone at the fine link (with a fine clustering to be alone in)."""
        return bool(self.poor[i]) and self.fine is not None and self.fine.clusters[i] < 0

    def tied(self, asking: list[tuple[int, int, float, float]], direct: float):
        """The entries of ``asking`` (face, person, ...) whose face is tied to its person, in the given order."""
        if not asking:
            return []
        photo = self.photo
        by_group: dict[int, list[int]] = defaultdict(list)
        for i, *_ in asking:
            by_group[int(self.coarse.clusters[i])].append(i)
        nearest: dict[int, int] = {}
        claimed: set[int] = set()  # faces the rest of their group, as a whole, claims
        for c, faces in by_group.items():
            rows = self.coarse.members(c)
            Xr = self.X[rows]
            total = Xr.sum(axis=0, dtype=np.float64)
            step = max(1, self.BLOCK // max(1, rows.size))
            for lo in range(0, len(faces), step):
                a = np.asarray(faces[lo : lo + step], dtype=np.int64)
                S = self.X[a] @ Xr.T
                own = a[:, None] == rows[None, :]  # itself
                if photo is not None:
                    own |= photo[a][:, None] == photo[rows][None, :]  # and the faces of its own photo
                S[own] = -np.inf
                best = S.argmax(axis=1)
                rest = total[None, :] - own.astype(np.float32) @ Xr  # the group without its photo: its mean face
                norm = np.linalg.norm(rest, axis=1)
                mean_score = np.einsum("ij,ij->i", self.X[a].astype(np.float64), rest) / np.maximum(norm, 1e-12)
                for r, i in enumerate(a.tolist()):
                    if np.isfinite(S[r, best[r]]):
                        nearest[i] = int(rows[best[r]])
                    if mean_score[r] >= direct:
                        claimed.add(i)
        out = []
        for entry in asking:
            i, p = entry[0], entry[1]
            j = nearest.get(i, -1)
            if j < 0 or i not in claimed:
                continue
            if self.human[j] >= 0:
                tie = int(self.human[j]) == p and bool(self.good[j])
            else:
                tie = _linked_at_fine_link(self.fine, j, p)
            if tie:
                out.append(entry)
        return out


def unknown_groups(clusters: np.ndarray, person: np.ndarray, min_size: int = 2) -> np.ndarray:
    """The unknown clusters shown to people: the clustering of everyone restricted to faces without a name,
    groups smaller than ``min_size`` → -1 (noise)."""
    out = np.where(np.asarray(person) < 0, np.asarray(clusters), -1).astype(np.int64)
    pos = out >= 0
    if pos.any():
        u, inv, cnt = np.unique(out[pos], return_inverse=True, return_counts=True)
        idx = np.flatnonzero(pos)
        out[idx[cnt[inv.ravel()] < max(1, min_size)]] = -1
    return out
