"""The naming rules (core.naming) on real faces: never name a stranger, ask instead, honour people's answers.

Real product embeddings of every detected face (``evaluation.datasets.load_labelled``; the cache builds itself
when missing). Two sets:

* faces_dev, all 28 people, every label budget of the protocol (seed 0);
* an lfw_dev slice chosen to hold look-alikes, by a fixed rule: identity pairs (both with >= 2 photos) ranked by
  the highest cosine between a subject face of one and a subject face of the other, the top
  ``LOOKALIKE_PAIRS`` pairs whose highest cosine is below ``SAME_MAN_TWO_NAMES`` (above it the "pair" is one
  person filed under two names, LFW label noise such as John_Gruden / Jon_Gruden), with every face of their
  photos. In each pair the person with more photos is named (3 labels) and the other is the stranger who looks
  like them.

Nothing asserts a tuned number: the assertions are the rules (no stranger named, every name outside the
impostor range of the person's own labels, a suggestion where the evidence is suggestive, no name across a
rejection or a "different people" answer, labels never change how unnamed faces are grouped).
"""

from __future__ import annotations

import numpy as np
import pytest

from face_pipeline.core import assign as assign_mod
from face_pipeline.core import naming
from face_pipeline.core.cluster import cluster_faces
from face_pipeline.evaluation import protocol as P
from face_pipeline.evaluation.datasets import LabelledFaces, load_labelled
from face_pipeline.settings import Settings

LOOKALIKE_PAIRS = 12
SAME_MAN_TWO_NAMES = 0.7
#: LFW label noise in lfw_dev: the same man under two spellings of his name.
ONE_MAN_TWO_NAMES = {("John_Gruden", "Jon_Gruden")}
SETTINGS = Settings(home="/nonexistent-unused")
BARS = naming.bars_for(SETTINGS.model_name)


def _subset(d: LabelledFaces, rows: np.ndarray) -> LabelledFaces:
    photos, photo = np.unique(d.photo[rows], return_inverse=True)
    return LabelledFaces(name=f"{d.name}-slice", X=d.X[rows], norms=d.norms[rows], det_score=d.det_score[rows],
                         quality=d.quality[rows], identity=d.identity[rows], photo=photo.astype(np.int64),
                         labelled=d.labelled[rows], bbox=d.bbox[rows], photo_paths=[d.photo_paths[p] for p in photos])


@pytest.fixture(scope="module")
def faces_dev() -> LabelledFaces:
    try:
        return load_labelled("faces_dev")
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def lookalikes() -> tuple[LabelledFaces, list[tuple[str, str]]]:
    try:
        d = load_labelled("lfw_dev")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    subj = np.flatnonzero(d.labelled)
    names, code, count = np.unique(d.identity[subj], return_inverse=True, return_counts=True)
    many = count[code] >= 2
    rows = subj[many]
    c = code[many]
    S = d.X[rows] @ d.X[rows].T
    S[c[:, None] == c[None, :]] = -1
    best: dict[tuple[int, int], float] = {}
    for i, j in zip(*np.nonzero(np.triu(S >= BARS.impostor, 1))):
        key = (min(c[i], c[j]), max(c[i], c[j]))
        best[key] = max(best.get(key, -1.0), float(S[i, j]))
    ranked = sorted(((v, k) for k, v in best.items() if v < SAME_MAN_TWO_NAMES), reverse=True)
    pairs, used = [], set()
    for _, (a, b) in ranked:
        if a in used or b in used:
            continue
        used |= {a, b}
        big, small = (a, b) if count[a] >= count[b] else (b, a)
        pairs.append((str(names[big]), str(names[small])))
        if len(pairs) == LOOKALIKE_PAIRS:
            break
    people = {n for p in pairs for n in p}
    photos = np.unique(d.photo[subj[np.isin(d.identity[subj], list(people))]])
    return _subset(d, np.flatnonzero(np.isin(d.photo, photos))), pairs


def _label(d: LabelledFaces, named: list[str], k: int, seed: int = 0) -> P.Split:
    rng = np.random.default_rng(seed)
    human = np.full(len(d), -1, np.int64)
    for p, name in enumerate(named):
        rows = np.flatnonzero(d.labelled & (d.identity == name))
        human[rng.choice(rows, size=min(k, len(rows)), replace=False)] = p
    return P.Split(seed, k, 0.0, list(named), human)


def _run(d: LabelledFaces, split: P.Split, **kw) -> tuple[naming.Naming, np.ndarray]:
    clusters = cluster_faces(d.X, SETTINGS.unknown_method, threshold=SETTINGS.unknown_threshold, min_size=2, groups=d.photo.tolist())
    fine = cluster_faces(d.X, SETTINGS.unknown_method, threshold=naming.FINE_LINK, min_size=2, groups=d.photo.tolist())
    res = naming.name_faces(d.X, split.human, groups=d.photo.tolist(), quality=kw.pop("quality", d.quality), clusters=clusters,
                            fine_clusters=fine, fine_link_quality=kw.pop("fine_link_quality", BARS.fine_link_quality),
                            direct=SETTINGS.person_match_threshold, impostor=BARS.impostor, min_quality=SETTINGS.person_min_quality, **kw)
    return res, clusters


def _own_scores(d: LabelledFaces, split: P.Split, quality: np.ndarray | None = None) -> np.ndarray:
    """(N, persons) score of every face against each person's human labels (the evidence ones)."""
    q = d.quality if quality is None else quality
    ev = (split.human >= 0) & (q >= SETTINGS.person_min_quality)
    protos = assign_mod.build_prototypes(d.X[ev], split.human[ev].tolist())
    S = np.full((len(d), len(split.people)), -1.0)
    S[:, protos.person_ids] = assign_mod.person_scores(protos, d.X, SETTINGS.person_strategy)
    return S


def _assert_rules(d: LabelledFaces, split: P.Split, res: naming.Naming, clusters: np.ndarray, wrong_ok: bool = False) -> None:
    auto = np.flatnonzero((res.person >= 0) & (split.human < 0))
    names = np.array(split.people, dtype=object)
    subjects = auto[d.labelled[auto]]
    # No subject face of a person nobody named gets a name, and no named person's face gets another's name.
    wrong = [(d.identity[i], names[res.person[i]]) for i in subjects if names[res.person[i]] != d.identity[i]]
    if not wrong_ok:
        assert wrong == []
    # Every name is outside the impostor range of the person's own labels; below the direct bar only when the
    # face's group holds that person's labels and nobody else's, or no labels at all (one hop, rule 6).
    S = _own_scores(d, split)
    for i in auto:
        p = int(res.person[i])
        assert S[i, p] >= BARS.impostor - 1e-6, (i, S[i, p])
        if S[i, p] < SETTINGS.person_match_threshold:
            holders = set(split.human[(clusters == clusters[i]) & (split.human >= 0)].tolist())
            assert holders in ({p}, set()), (i, holders)
    # One person at most once per photo.
    given = [(int(d.photo[i]), int(res.person[i])) for i in np.flatnonzero(res.person >= 0)]
    assert len(given) == len(set(given))


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("fraction", [0.5, 0.1])
def test_faces_dev_names_nobody_wrongly(faces_dev, k, fraction):
    split = P.make_split(faces_dev, 0, k, fraction)
    res, clusters = _run(faces_dev, split)
    _assert_rules(faces_dev, split, res, clusters)
    assert ((res.person >= 0) & (split.human < 0)).any()  # the rules do name people


def test_lookalikes_are_asked_about_and_named_only_by_the_rules(lookalikes):
    d, pairs = lookalikes
    named = [big for big, _ in pairs]
    split = _label(d, named, 3)
    res, clusters = _run(d, split)
    _assert_rules(d, split, res, clusters, wrong_ok=True)
    strangers = {small for _, small in pairs}
    stranger_rows = np.flatnonzero(d.labelled & np.isin(d.identity, list(strangers)))
    # The look-alikes were chosen because they reach the named person beyond the impostor bar: the evidence is
    # suggestive, so the product asks.
    asked = {i for s in res.suggestions for i in s.rows + s.other_rows}
    suggestive = [i for i in stranger_rows if _own_scores(d, split)[i].max() >= BARS.impostor]
    assert suggestive and asked & set(suggestive)
    for s in res.suggestions:
        assert s.kind in ("face_is_person", "cluster_is_person", "same_person")
        if s.kind == "face_is_person":
            assert BARS.impostor <= s.score and res.person[s.rows[0]] < 0
        if s.kind != "same_person":
            assert all(res.person[i] < 0 for i in s.rows) and s.bar == SETTINGS.person_match_threshold


@pytest.mark.xfail(strict=True, reason="known limit: Lina_Krasnoroutskaya's photos score 0.40-0.44 against Amanda_Beard's "
                   "labels and Chinese Whispers puts them in Amanda's group, so no rule tells them apart (issue 7, families)")
def test_no_lookalike_stranger_is_named(lookalikes):
    d, pairs = lookalikes
    split = _label(d, [big for big, _ in pairs], 3)
    res, _ = _run(d, split)
    stranger_rows = np.flatnonzero(d.labelled & np.isin(d.identity, [small for _, small in pairs]))
    assert (res.person[stranger_rows] < 0).all()


@pytest.fixture(scope="module")
def lfw_dev_clusterings() -> tuple[LabelledFaces, np.ndarray, np.ndarray]:
    try:
        d = load_labelled("lfw_dev")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    clusters, _ = P.cluster_everyone(d)
    fine, _ = P.cluster_everyone(d, threshold=naming.FINE_LINK)
    return d, clusters, fine


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_a_real_library_only_label_noise_is_named_wrongly(lfw_dev_clusterings, k, seed):
    """The whole of lfw_dev, half of the people with >= 5 photos named (the protocol of bench/quality.py): every
    face given a name that is not its own must be LFW label noise — one man filed under two spellings of his name
    (``ONE_MAN_TWO_NAMES``, checked by eye on the photos). Brothers (Mark and Scott McClellan)
    and look-alikes (Zeng Qinghong and Wen Jiabao) were named one hop below the direct bar before the fine-link
    guard of rule 6."""
    d, clusters, fine = lfw_dev_clusterings
    split = P.make_split(d, seed, k, 0.5)
    person, _, _, _ = P.run_ours(d, split, clusters, fine=fine)
    _assert_only_label_noise_named_wrongly(d, split, person)


def _assert_only_label_noise_named_wrongly(d: LabelledFaces, split: P.Split, person: np.ndarray) -> None:
    names = np.array(split.people, dtype=object)
    for i in np.flatnonzero((person >= 0) & (split.human < 0) & d.labelled):
        given = names[person[i]]
        if given != d.identity[i]:
            assert (d.identity[i], given) in ONE_MAN_TWO_NAMES or (given, d.identity[i]) in ONE_MAN_TWO_NAMES, (d.identity[i], given)


def _answered(d: LabelledFaces, split: P.Split, clusters: np.ndarray, fine: np.ndarray, clicks: int):
    """Ours before and after a user answered ``clicks`` clicks of the review queue from the truth (scored rows)."""
    from face_pipeline.evaluation.answers import answer_queue

    person, groups, _, _ = P.run_ours(d, split, clusters, fine=fine)
    before = P.score("ours", d, split, person, groups, 0.0)
    res, a = answer_queue(d, split, lambda sp, rej, cl: P.run_ours(d, sp, clusters, fine=fine, rejected=rej, cannot_link=cl)[3], clicks)
    after = P.score("ours + answers", d, a.split, res.person, naming.unknown_groups(clusters, res.person, min_size=2), 0.0)
    return before, after, a, res


@pytest.mark.parametrize("k,fraction", [(0, 0.0), (1, 0.5), (3, 0.5)], ids=["nobody-named", "K1-half", "K3-half"])
def test_answering_the_queue_settles_what_automation_leaves_on_faces_dev(faces_dev, k, fraction):
    """Where automation stops short (with labels: faces inside the impostor range of the named person, which no rule
    names), the product asks; a few answers from the truth put ours at or above every anchor's automation on the same
    split, and no answer makes automation name anyone wrongly. With nobody named, clustering already places Elton
    John's poor tight crops (mean cosine 0.29 to his other photos, like brothers' 0.30) with him, by their quality,
    and the queue may have nothing left to ask."""
    from face_pipeline.evaluation.anchors import ANCHORS

    d = faces_dev
    clusters, _ = P.cluster_everyone(d)
    fine, _ = P.cluster_everyone(d, threshold=naming.FINE_LINK)
    split = P.nobody(d) if not k else P.make_split(d, 0, k, fraction)
    before, after, a, res = _answered(d, split, clusters, fine, clicks=10)
    assert a.answers <= 10
    assert after.strangers_named == 0 and after.known_p == 1.0
    assert after.b3_f > before.b3_f or (a.yes == 0 and after.b3_f == before.b3_f)
    for name, fn in ANCHORS.items():
        ap, ag = P.run_anchor(d, split, fn(d.X))
        anchor = P.score(name, d, split, ap, ag, 0.0)
        assert after.b3_f >= anchor.b3_f, (name, after.b3_f, anchor.b3_f)
        assert before.b3_f >= anchor.b3_f or a.yes >= 1, f"automation is below {name} and asked nothing"
    labelled_now = a.split.human >= 0
    assert (res.person[labelled_now] == a.split.human[labelled_now]).all(), "an answer is a human label automation keeps"


def test_answering_the_queue_on_a_real_library_names_no_stranger(lfw_dev_clusterings):
    """lfw_dev, half the people with >= 5 photos named with one label (seed 0): 50 clicks of the queue answered
    from the truth; automation after the answers still names nobody wrongly except LFW label noise, and the
    library is organised better (BCubed F) than before the answers."""
    d, clusters, fine = lfw_dev_clusterings
    split = P.make_split(d, 0, 1, 0.5)
    before, after, a, res = _answered(d, split, clusters, fine, clicks=50)
    assert a.questions >= 10
    assert after.b3_f >= before.b3_f and after.known_r >= before.known_r
    _assert_only_label_noise_named_wrongly(d, a.split, res.person)


def test_no_name_crosses_a_rejection_or_a_different_people_answer(lookalikes):
    d, pairs = lookalikes
    split = _label(d, [big for big, _ in pairs], 3)
    res, _ = _run(d, split)
    auto = np.flatnonzero((res.person >= 0) & (split.human < 0))
    assert auto.size >= 2
    rejected_face, linked_face = int(auto[0]), int(auto[1])
    label_of = {int(res.person[linked_face]): int(np.flatnonzero(split.human == res.person[linked_face])[0])}
    again, _ = _run(d, split, rejected={rejected_face: {int(res.person[rejected_face])}},
                    cannot_link=[(label_of[int(res.person[linked_face])], linked_face)])
    assert again.person[rejected_face] != res.person[rejected_face]
    assert again.person[linked_face] != res.person[linked_face]
    for s in again.suggestions:  # and nobody is asked about what a person already answered
        assert not (rejected_face in s.rows and s.person == int(res.person[rejected_face]) and s.kind == "face_is_person")


def test_low_quality_labels_carry_no_name(lookalikes):
    d, pairs = lookalikes
    split = _label(d, [pairs[0][0]], 3)
    low = d.quality.copy()
    low[split.human >= 0] = SETTINGS.person_min_quality / 2  # the person's only labels are poor faces
    res, _ = _run(d, split, quality=low)
    assert not ((res.person >= 0) & (split.human < 0)).any()
    assert (res.person[split.human >= 0] == 0).all()  # their own labels stay


def test_labels_never_change_how_unnamed_faces_are_grouped(lookalikes):
    """Everyone is clustered without looking at labels; naming only takes faces out of groups. So for the faces
    still unnamed, two faces share an unknown group with labels present exactly when they do without."""
    d, pairs = lookalikes
    split = _label(d, [big for big, _ in pairs], 3)
    res, clusters = _run(d, split)
    without = naming.unknown_groups(clusters, np.full(len(d), -1), min_size=1)
    with_labels = naming.unknown_groups(clusters, res.person, min_size=1)
    free = np.flatnonzero(res.person < 0)
    same_with = with_labels[free][:, None] == with_labels[free][None, :]
    same_without = without[free][:, None] == without[free][None, :]
    np.testing.assert_array_equal(same_with, same_without)
    # ...and the clustering itself is a function of the faces and the photos only.
    np.testing.assert_array_equal(clusters, cluster_faces(d.X, SETTINGS.unknown_method, threshold=SETTINGS.unknown_threshold,
                                                          min_size=2, groups=d.photo.tolist()))


def test_a_different_people_answer_splits_the_group_that_joined_them(lookalikes):
    d, _ = lookalikes
    labels = cluster_faces(d.X, SETTINGS.unknown_method, threshold=SETTINGS.unknown_threshold, groups=d.photo.tolist())
    c = np.bincount(labels[labels >= 0]).argmax()
    members = np.flatnonzero(labels == c)
    a, b = int(members[0]), int(members[-1])
    split = cluster_faces(d.X, SETTINGS.unknown_method, threshold=SETTINGS.unknown_threshold, groups=d.photo.tolist(),
                          cannot_link=[(a, b)])
    assert split[a] != split[b] or split[a] < 0
    joined = cluster_faces(d.X, SETTINGS.unknown_method, threshold=SETTINGS.unknown_threshold, groups=d.photo.tolist(),
                           must_link=[(a, int(np.flatnonzero(labels != c)[0]))])
    assert joined.shape == labels.shape


def test_the_recorded_impostor_bar_is_this_models_measurement():
    """``naming.MODEL_BARS`` records, per model, the 99.99th percentile of the cosine between subject faces filed
    under different names on lfw_dev. Measured again here on the cached embeddings of the shipped model: a new
    model (or a changed detector/aligner) must get its own line, not inherit this one."""
    try:
        d = load_labelled("lfw_dev")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    q, top, _ = P.impostor_quantiles(d)
    assert round(q[0.9999], 3) == BARS.impostor
    assert round(q[0.99], 3) == BARS.impostor_p99 and round(q[0.999], 3) == BARS.impostor_p999
    assert round(top, 3) == BARS.impostor_max
    assert BARS.impostor < SETTINGS.person_match_threshold  # the direct bar sits above the impostor range


def test_the_recorded_fine_link_quality_is_this_models_measurement():
    """``ModelBars.fine_link_quality`` is where a person's own faces stop being alone at the fine link: measured
    again here on lfw_dev (the lowest quality bin from which every bin upward has >= 95 % of faces linked to another
    of their own at ``FINE_LINK``), and it lies where the model's faces are mostly poor ones (the impostor range does
    not move with quality: a poor face's score means what a good one's does)."""
    try:
        d = load_labelled("lfw_dev")
    except FileNotFoundError as e:
        pytest.skip(str(e))
    bins = P.fine_link_by_quality(d, naming.FINE_LINK)
    assert P.fine_link_quality(bins, naming.GENUINE_FINE_RATE) == BARS.fine_link_quality
    below = [share for lo, _, share in bins if lo < BARS.fine_link_quality and lo >= SETTINGS.person_min_quality]
    assert below and max(below) < naming.GENUINE_FINE_RATE  # there, a person's own faces are often alone
    assert naming.UNMEASURED.fine_link_quality == 0.0  # a model nobody measured: every face needs the fine tie


def test_a_poor_face_alone_at_the_fine_link_takes_its_groups_name_and_a_good_one_does_not(faces_dev):
    """Rule 6's fine-link guard blocks faces alone at the stricter link (brothers meet at 0.4-0.5). A face below the
    model's fine-link quality is often alone there when it is the person, so it is tied through the face it is most
    like instead: on faces_dev such faces — Madonna's and Serena Williams' weaker photos, in their person's group,
    above the impostor bar — are named, correctly, and only they; the same face with a good quality score is not."""
    d = faces_dev
    fine = cluster_faces(d.X, SETTINGS.unknown_method, threshold=naming.FINE_LINK, min_size=2, groups=d.photo.tolist())
    names_gained = 0
    for seed in range(3):
        split = P.make_split(d, seed, 1, 0.5)
        strict, _ = _run(d, split, fine_link_quality=0.0)
        res, clusters = _run(d, split)
        _assert_rules(d, split, res, clusters)
        gained = np.flatnonzero((res.person >= 0) & (strict.person < 0))
        assert ((strict.person >= 0) <= (res.person >= 0)).all()  # nothing named before is lost
        for i in gained:
            assert d.quality[i] < BARS.fine_link_quality and fine[i] < 0
            assert split.people[res.person[i]] == d.identity[i]
        names_gained += len(gained)
        if len(gained):
            good = d.quality.copy()
            good[gained] = 0.9
            again, _ = _run(d, split, quality=good)
            assert (again.person[gained] < 0).all()
    assert names_gained > 0


def test_a_person_cut_in_two_by_the_coarse_clustering_is_named_through_the_fine_one(faces_dev):
    """Chinese Whispers at the link can cut a person's faces in two where the stricter clustering keeps them all with
    the label (lfw_dev, K=1: 6 of Andy Roddick's 14 photos). The fine group's tie to the label is the same evidence,
    tighter, so the cut-off faces are named exactly as if the cut had not happened; cut at both links, they are a
    group without a label: asked about, and named only on their own scores. Real faces of faces_dev's most
    photographed person, one label; the two clusterings are given, so the test is the rule, not a clustering's luck."""
    d = faces_dev
    subj = np.flatnonzero(d.labelled)
    names, counts = np.unique(d.identity[subj], return_counts=True)
    rows = subj[d.identity[subj] == names[np.argmax(counts)]]
    label = rows[np.argmax((d.X[rows] @ d.X[rows].T).sum(axis=1))]  # the photo most like the others
    others = rows[rows != label]
    others = others[np.argsort(-(d.X[others] @ d.X[label]))]
    cut = others[1::2]  # every second face by closeness to the label: a half like the whole
    human = np.full(len(d), -1)
    human[label] = 0

    def grouping(*parts) -> np.ndarray:
        out = np.full(len(d), -1)
        for c, part in enumerate(parts):
            out[part] = c
        return out

    whole, halves = grouping(rows), grouping(np.setdiff1d(rows, cut), cut)
    kw = dict(groups=d.photo.tolist(), quality=d.quality, direct=SETTINGS.person_match_threshold, impostor=BARS.impostor,
              fine_link_quality=BARS.fine_link_quality)
    uncut = naming.name_faces(d.X, human, clusters=whole, fine_clusters=whole, **kw)
    coarse_cut = naming.name_faces(d.X, human, clusters=halves, fine_clusters=whole, **kw)
    both_cut = naming.name_faces(d.X, human, clusters=halves, fine_clusters=halves, **kw)
    score = d.X[cut] @ d.X[label]
    mean = d.X[cut].sum(axis=0) / np.linalg.norm(d.X[cut].sum(axis=0))
    assert float(mean @ d.X[label]) >= SETTINGS.person_match_threshold  # the cut half as a whole is this person's
    group_only = (score >= BARS.impostor) & (score < SETTINGS.person_match_threshold)
    assert group_only.any() and (uncut.person[cut][group_only] == 0).any()  # the group names someone here
    assert (coarse_cut.person[cut] == uncut.person[cut]).all()
    assert (both_cut.person[cut][group_only] < 0).all()
    asked = {i for s in both_cut.suggestions if s.kind == "cluster_is_person" and s.person == 0 for i in s.rows}
    assert set(cut[both_cut.person[cut] < 0].tolist()) <= asked


def _ann_and_her_sister(sp, sister_photos: int):
    """Ann: six photos of one identity in six looks (cosine 0.56 between two of them), one of them labelled (K = 1);
    her sister: ``sister_photos`` good photos (cosine 0.22 to Ann's); a poor photo of Ann (0.38 to each of Ann's
    photos, below the direct bar against her one label) and a poor photo of the sister (0.30 against Ann's label:
    above the impostor bar). Returns the faces, the human labels, and the rows of the two poor faces."""
    ann = [sp.face(ann=0.75, **{f"look{i}": 0.5}) for i in range(6)]
    sister = [sp.face(sib=0.8, ann=0.3) for _ in range(sister_photos)]
    X = np.stack(ann + sister + [sp.face(ann=0.5), sp.face(sib=0.55, ann=0.4)])
    human = np.array([0] + [-1] * (len(X) - 1))
    return X, human, len(X) - 2, len(X) - 1


def test_a_relatives_poor_face_stays_unnamed_where_the_persons_own_poor_face_is_named():
    """The family case the fine link exists for (synthetic: lfw_dev has no families). Ann is named with one label;
    her sister has photos of her own, and the clustering at 0.4 merged the sisters into one group. Two poor faces
    (quality 0.45) sit alone at the fine link, both above the impostor bar against Ann's label and neither at the
    direct bar: Ann's own, which the rest of the group as a whole claims and which is most like Ann's photos, takes
    her name; the sister's, which is most like the sister's own photos (a stricter group that is not Ann), does not.
    A poor face the group as a whole does not claim is not named either, however near one photo of Ann it is."""
    from face_pipeline_tests.core.test_organize import Space

    sp = Space(seed=11)
    X, human, ann_poor, sister_poor = _ann_and_her_sister(sp, sister_photos=3)
    coarse = np.zeros(len(X), np.int64)  # one group at 0.4: the sisters merged
    fine = np.array([0] * 6 + [1] * 3 + [-1, -1])  # at 0.5: Ann, the sister, and the two poor faces alone
    quality = np.array([0.9] * 9 + [0.45, 0.45])
    kw = dict(groups=list(range(len(X))), quality=quality, clusters=coarse, fine_clusters=fine, suggest=False,
              direct=SETTINGS.person_match_threshold, impostor=BARS.impostor, min_quality=SETTINGS.person_min_quality)
    label = X[0]
    assert ((X[[ann_poor, sister_poor]] @ label >= BARS.impostor) & (X[[ann_poor, sister_poor]] @ label < kw["direct"])).all()
    rest = X[:-2].sum(axis=0) + X[sister_poor]
    assert X[ann_poor] @ rest / np.linalg.norm(rest) >= kw["direct"]  # the group as a whole claims Ann's poor face
    res = naming.name_faces(X, human, fine_link_quality=BARS.fine_link_quality, **kw)
    assert res.person[[ann_poor, sister_poor]].tolist() == [0, -1]
    assert (res.person[6:9] < 0).all()  # the sister's own photos: a stricter group that is not Ann
    strict = naming.name_faces(X, human, fine_link_quality=0.0, **kw)  # a model nobody measured: both held back
    assert strict.person[[ann_poor, sister_poor]].tolist() == [-1, -1]
    # Only the two poor faces asked about (the sister's photos are not candidates, so no view holds their group).
    only = naming.name_faces(X, human, fine_link_quality=BARS.fine_link_quality, candidates=[ann_poor, sister_poor], **kw)
    assert only.person[[ann_poor, sister_poor]].tolist() == [0, -1]
    # The label too poor to be evidence (rule 4): nothing is named at all.
    kw["quality"] = np.where(np.arange(len(X)) == 0, 0.1, quality)
    assert (naming.name_faces(X, human, fine_link_quality=BARS.fine_link_quality, **kw).person[1:] < 0).all()
    # A poor face at 0.31 to every photo of Ann: above the impostor bar against her label, near one of her photos,
    # but the group as a whole (0.30) does not claim it.
    faint = sp.face(ann=0.41)
    X2 = np.vstack([X[:-2], faint[None], X[sister_poor][None]])
    rest = X2[:-2].sum(axis=0) + X2[-1]
    assert X2[-2] @ label >= BARS.impostor and X2[-2] @ rest / np.linalg.norm(rest) < kw["direct"]
    kw["quality"] = quality
    assert naming.name_faces(X2, human, fine_link_quality=BARS.fine_link_quality, **kw).person[-2] == -1


def test_a_relative_seen_once_in_a_poor_photo_is_not_named_through_the_persons_group():
    """The relative seen once, in a poor photo, that the clustering at 0.4 put in the named person's group: its
    nearest face there is Ann's (tied to her at the fine link), its score against Ann's label is above the impostor
    bar, but the rest of the group as a whole does not claim it, so it stays a suggestion; Ann's own poor face in
    the same group is named (bench/poor_faces.py --families: a relative seen only in two poor photos, at brothers'
    similarity, gets the name on 21 of 300 faces with the tie, 15 with it off, 32 before this condition)."""
    from face_pipeline_tests.core.test_organize import Space

    sp = Space(seed=5)
    X, human, ann_poor, sister_poor = _ann_and_her_sister(sp, sister_photos=0)
    X[sister_poor] = sp.face(sib=0.6, ann=0.4)  # 0.30 to each of Ann's photos
    coarse = np.zeros(len(X), np.int64)
    fine = np.array([0] * 6 + [-1, -1])
    quality = np.array([0.9] * 6 + [0.45, 0.45])
    kw = dict(groups=list(range(len(X))), quality=quality, clusters=coarse, fine_clusters=fine, suggest=False,
              direct=SETTINGS.person_match_threshold, impostor=BARS.impostor, min_quality=SETTINGS.person_min_quality)
    others = np.flatnonzero(np.arange(len(X)) != sister_poor)
    assert int(others[np.argmax(X[others] @ X[sister_poor])]) < 6  # its nearest face is one of Ann's
    assert BARS.impostor <= X[sister_poor] @ X[0] < kw["direct"]
    res = naming.name_faces(X, human, fine_link_quality=BARS.fine_link_quality, **kw)
    assert res.person[[ann_poor, sister_poor]].tolist() == [0, -1]
    assert any(s.kind == "face_is_person" and sister_poor in s.rows for s in naming.name_faces(
        X, human, fine_link_quality=BARS.fine_link_quality, **{**kw, "suggest": True}).suggestions)


def test_the_brother_of_issue_7_is_not_named_through_his_own_group():
    """Issue 7's brothers, synthetic with its numbers: A has 40 photos (3 labelled), his unnamed brother 530 (0.62
    mean cosine among themselves, 0.30 to A's), plus 100 strangers. The brother's photos form groups that hold no
    label, whose mean face (0.43-0.48 against A's labels) clears the direct bar although his single faces sit at
    ~0.35: no face of his may be named beyond those that clear the direct bar on their own (rule 6 adds none: a
    group without a label is asked about). Naming label-less groups by their mean gave A's name to 442 of 530."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from synthetic import direction_sampler

    rng = np.random.default_rng(0)
    dirs, _ = direction_sampler(rng, 512, 0.7)
    faces = lambda c, m: (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True))(np.sqrt(0.62) * c + np.sqrt(0.38) * dirs(m))  # noqa: E731
    a, u = dirs(1)[0], dirs(1)[0]
    u -= (u @ a) * a
    rho = 0.30 / 0.62  # faces across at 0.30
    b = rho * a + np.sqrt(1 - rho**2) * u / np.linalg.norm(u)
    X = np.vstack([faces(a, 40), faces(b, 530)] + [faces(o, 5) for o in dirs(100)]).astype(np.float32)
    brother = np.r_[np.zeros(40, bool), np.ones(530, bool), np.zeros(500, bool)]
    assert abs(float((X[brother] @ X[:40].T).mean()) - 0.30) < 0.02
    human = np.full(len(X), -1)
    human[:3] = 0
    photo = list(range(len(X)))
    kw = dict(groups=photo, quality=None, clusters=cluster_faces(X, None, threshold=SETTINGS.unknown_threshold, groups=photo),
              fine_clusters=cluster_faces(X, None, threshold=naming.FINE_LINK, groups=photo), direct=SETTINGS.person_match_threshold,
              impostor=BARS.impostor, fine_link_quality=BARS.fine_link_quality, suggest=False)
    on_their_own = int((naming.name_faces(X, human, group_names=False, **kw).person[brother] >= 0).sum())
    res = naming.name_faces(X, human, **{**kw, "suggest": True})
    assert int((res.person[brother] >= 0).sum()) <= on_their_own < 530 // 3
    assert (res.person[3:40] == 0).all()  # A's own unlabelled photos: his labelled group names them
    asked = {i for s in res.suggestions if s.kind == "cluster_is_person" and s.person == 0 for i in s.rows}
    assert np.flatnonzero(brother & (res.person < 0))[0] in asked  # the brother's group is a question instead


class _AdversarialHead:
    """A head that always prefers the last named person, whatever raw space says: rule 8 must bound *any* head
    (the contract is checked here, not a trained model's quality; test_heads runs the real one)."""

    raw_bar, raw_floor = SETTINGS.person_match_threshold, SETTINGS.training_raw_floor

    def named_person_scores(self, X, label_X, label_owner, n_people):
        out = np.zeros((len(X), n_people), np.float32)
        out[:, -1] = 0.99
        return out

    def name(self, raw, head_scores, raw_bar=None):
        from face_pipeline.core.train import name_faces

        return name_faces(raw, head_scores, raw_bar=max(self.raw_bar, raw_bar or 0), raw_floor=self.raw_floor)


def test_a_head_never_breaks_a_tie_nor_names_below_the_bar_without_the_library_agreeing():
    from face_pipeline_tests.core.test_organize import Space

    sp = Space(seed=5)
    labels = [sp.face(ann=0.95) for _ in range(3)] + [sp.face(bob=0.95) for _ in range(3)]
    faces = [sp.face(ann=0.7, bob=0.35),  # raw: Ann ~0.7, Bob ~0.35 -> named Ann, the head would move it to Bob
             sp.face(ann=0.36, bob=0.34),  # two people above the floor: the head may not choose between them
             sp.face(bob=0.36)]  # one candidate below the direct bar: a lift needs the fine clustering's tie
    X = np.stack(labels + faces)
    human = np.array([0, 0, 0, 1, 1, 1, -1, -1, -1])
    kw = dict(groups=list(range(len(X))), quality=None, direct=SETTINGS.person_match_threshold, impostor=BARS.impostor, suggest=False)
    raw = naming.name_faces(X, human, clusters=None, **kw)
    for clusters, fine in ((None, None), (np.arange(len(X)), None)):  # no structure; structure but no fine view (incremental)
        res = naming.name_faces(X, human, clusters=clusters, fine_clusters=fine, head=_AdversarialHead(), **kw)
        assert res.person.tolist()[6:] == raw.person.tolist()[6:] == [0, -1, -1]
    # Poor faces alone in both clusterings: the head gets no easier tie for them (rule 6's poor-face tie is rule 6's).
    alone = np.array([0, 0, 0, 1, 1, 1, -1, -1, -1])
    kw.update(quality=np.array([0.9] * 6 + [0.45] * 3), fine_link_quality=BARS.fine_link_quality)
    res = naming.name_faces(X, human, clusters=alone, fine_clusters=alone.copy(), head=_AdversarialHead(), **kw)
    assert res.person.tolist()[6:] == [0, -1, -1]


def test_rule_7_compares_a_name_the_head_gave_with_people_below_it_not_with_the_one_it_overruled():
    """Faces at ~0.6 for Ann and ~0.55 for Bob in raw space, both above the direct bar; the head prefers Bob and
    rule 8 lets it choose. Rule 7's runner-up is a person the face scores less for than its name: Ann, whom the
    head overruled, is not one, so her labels do not take the head's choice back (they would: raw space prefers her)."""
    from face_pipeline_tests.core.test_organize import Space

    sp = Space(seed=6)
    X = np.stack([sp.face(ann=0.95) for _ in range(3)] + [sp.face(bob=0.95) for _ in range(3)]
                 + [sp.face(ann=0.62, bob=0.56) for _ in range(4)])
    human = np.array([0] * 3 + [1] * 3 + [-1] * 4)
    faces = np.arange(6, 10)
    kw = dict(groups=list(range(len(X))), quality=None, clusters=None, direct=SETTINGS.person_match_threshold,
              impostor=BARS.impostor, suggest=False)
    protos = assign_mod.build_prototypes(X[:6], human[:6].tolist())
    S = assign_mod.person_scores(protos, X[faces])
    assert (S[:, 0] > S[:, 1]).all() and (S[:, 1] >= kw["direct"]).all()
    assert (naming.name_faces(X, human, **kw).person[faces] == 0).all()
    res = naming.name_faces(X, human, head=_AdversarialHead(), **kw)
    assert (res.person[faces] == 1).all() and not res.vetoed[faces].any()


def _lookalike_strangers_named(d: LabelledFaces, split: P.Split, res: naming.Naming, pairs) -> np.ndarray:
    auto = (res.person >= 0) & (split.human < 0) & d.labelled
    return np.flatnonzero(auto & np.isin(d.identity, [small for _, small in pairs]))


def _assert_nearer_own_labels_than_known_others(d: LabelledFaces, split: P.Split, res: naming.Naming, not_p: dict[int, list[int]]) -> None:
    """Rule 7: every face named automatically is at least as like one of its person's labels as like any face known
    not to be that person."""
    for p, others in not_p.items():
        labels = np.flatnonzero(split.human == p)
        for i in np.flatnonzero((res.person == p) & (split.human < 0)):
            assert (d.X[labels] @ d.X[i]).max() >= (d.X[others] @ d.X[i]).max(), (i, p)


def test_a_relative_seen_beside_the_persons_label_or_rejected_once_is_asked_about_not_named():
    """A family library (synthetic: lfw_dev has no families). Mum is named with 3 labels; her daughter's 8 photos
    are all at 0.44 against Mum's labels (above the direct bar: the centroid rule names every one) and at 0.66 to
    each other. At the stricter link her faces form a group of their own in which every face clears the bar, and
    at the coarser link they join Mum's group, so no group figure tells her apart (the known limit of rule 5).
    What does: in one of Mum's labelled photos the daughter stands beside
    her, so that face is certainly someone else, and the daughter's other photos are more like it than like any
    of Mum's labels; they are asked about, not named, by the photo alone (rule 7), and by their group beside Mum's
    (rule 5). A single "not Mum" on one of her photos does the same. Mum's own photos keep her name throughout.
    Where her group is her own at both links, that alone holds her back: only her own score ties her to Mum."""
    from face_pipeline_tests.core.test_organize import Space

    sp = Space(seed=5)
    X = np.stack([sp.face(mum=0.8) for _ in range(8)] + [sp.face(mum=0.55, daughter=0.6) for _ in range(8)])
    human = np.array([0] * 3 + [-1] * 13)
    mum_own, daughter = np.arange(3, 8), np.arange(8, 16)
    assert ((X[daughter] @ X[:3].T).max(axis=1) >= SETTINGS.person_match_threshold).all()
    apart = list(range(len(X)))
    together = apart.copy()
    together[8] = together[0]  # one family photo: Mum's first label and her daughter
    groups = np.array([0] * 8 + [1] * 8)
    merged = np.zeros(len(X), np.int64)  # the coarse link merged her into Mum's group
    kw = dict(quality=None, direct=SETTINGS.person_match_threshold, impostor=BARS.impostor)

    def named(photos, clusters=None, fine=None, **more):
        res = naming.name_faces(X, human, groups=photos, clusters=clusters, fine_clusters=fine, **kw, **more)
        assert (res.person[mum_own] == 0).all()
        return res

    for clusters, fine in ((None, None), (merged, groups)):
        assert (named(apart, clusters, fine).person[daughter] == 0).all()  # the threat: a threshold names her
        res = named(together, clusters, fine)
        assert (res.person[daughter] < 0).all()
        asked = {i for s in res.suggestions if s.person == 0 and s.kind in ("face_is_person", "cluster_is_person") for i in s.rows}
        assert set(daughter[1:].tolist()) <= asked
        assert (named(apart, clusters, fine, rejected={8: {0}}).person[daughter] < 0).all()
    res = named(apart, groups, groups)  # her own group at both links, no family photo, no answer
    assert (res.person[daughter] < 0).all() and res.vetoed[daughter].all()
    asked = {i for s in res.suggestions if s.person == 0 and s.kind == "cluster_is_person" for i in s.rows}
    assert set(daughter.tolist()) <= asked
    # The group rule alone: a photo of the daughter more like Mum's labels than like her face in the family photo
    # passes the photo rule, but her stricter group is seen beside Mum's labelled group, so it is not named either.
    Y = np.vstack([X, sp.face(mum=0.78, daughter=0.2)[None]])
    like_mum = len(Y) - 1
    assert (Y[:3] @ Y[like_mum]).max() > Y[8] @ Y[like_mum]
    photos, fine = together + [like_mum], np.append(groups, 1)
    h = np.append(human, -1)
    alone = naming.name_faces(Y, h, groups=photos, clusters=None, **kw)
    beside = naming.name_faces(Y, h, groups=photos, clusters=np.zeros(len(Y), np.int64), fine_clusters=fine, **kw)
    assert alone.person[like_mum] == 0 and beside.person[like_mum] < 0


def test_a_look_alike_rejected_once_holds_back_only_faces_more_like_her_than_the_persons_labels(lookalikes):
    """Real faces (lfw_dev's look-alike slice, the known limit above): after one "not this person" on a look-alike's
    photo, every face still given that name is at least as like one of the person's labels as like the rejected
    photo, and the rejected photo itself is not named."""
    d, pairs = lookalikes
    split = _label(d, [big for big, _ in pairs], 3)
    res, _ = _run(d, split)
    wrong = _lookalike_strangers_named(d, split, res, pairs)
    assert wrong.size  # what the xfail test above records
    first, p = int(wrong[0]), int(res.person[wrong[0]])
    again, _ = _run(d, split, rejected={first: {p}})
    assert again.person[first] != p
    _assert_nearer_own_labels_than_known_others(d, split, again, {p: [first]})


@pytest.mark.parametrize("clearing", [2, 4])
def test_a_group_without_labels_vetoes_unless_most_of_its_faces_clear_the_bar_on_their_own(monkeypatch, clearing):
    """Rule 5's like-for-like question. A look-alike's group of 6 faces, ``clearing`` of them above the direct bar
    against A's labels and the rest at 0.32; the group's mean face clears the bar either way (averaging). With 2 of 6
    the group as a whole is not A by the single-face measure, so the two are asked about, not named; with 4 of 6 it
    is, and they are named on their own scores (the coarser link put the group in A's, which is all that ties it to
    A: a group of its own at both links is asked about whatever its faces score). Without the question (MAJORITY 0) the two would be named."""
    from face_pipeline_tests.core.test_organize import Space

    sp = Space(seed=3)
    other = [sp.face(a=0.56, b=0.6) for _ in range(clearing)] + [sp.face(a=0.4, b=0.75) for _ in range(6 - clearing)]
    X = np.stack([sp.face(a=0.8) for _ in range(3)] + other)
    human = np.array([0] * 3 + [-1] * 6)
    clusters = np.array([0] * 3 + [1] * 6)  # a group of its own at the stricter link, inside A's at the coarser one
    rows = np.arange(3, 3 + clearing)
    kw = dict(groups=list(range(len(X))), quality=None, clusters=np.zeros(len(X), np.int64), fine_clusters=clusters,
              direct=SETTINGS.person_match_threshold, impostor=BARS.impostor)
    mean = X[3:].sum(axis=0) / np.linalg.norm(X[3:].sum(axis=0))
    assert (X[:3] @ mean).max() >= kw["direct"] and ((X[:3] @ X[rows].T).max(axis=0) >= kw["direct"]).all()
    res = naming.name_faces(X, human, **kw)
    assert (res.person[rows] == (0 if clearing > 3 else -1)).all()
    # An incremental run (one new face, no stricter clustering) asks the whole group, not the batch.
    alone = naming.name_faces(X, human, **{**kw, "clusters": clusters, "fine_clusters": None}, candidates=[int(rows[0])])
    assert alone.person[rows[0]] == res.person[rows[0]]
    monkeypatch.setattr(naming, "MAJORITY", 0.0)
    assert (naming.name_faces(X, human, **kw).person[rows] == 0).all()


def _family(seed: int, cousin_like: tuple[float, float] = (0.32, 0.28)):
    """Two named sisters (3 labels each, 4 more photos each) and their unnamed cousin, whose 4 photos lie between them
    (``cousin_like``: how much of Ann and of Bea): above the direct bar for both, a little nearer Ann."""
    from face_pipeline_tests.core.test_organize import Space

    sp = Space(seed=seed)
    ann = [sp.face(fam=0.5, ann=0.6) for _ in range(7)]
    bea = [sp.face(fam=0.5, bea=0.6) for _ in range(7)]
    cousin = [sp.face(fam=0.6, ann=cousin_like[0], bea=cousin_like[1]) for _ in range(4)]
    X = np.stack(ann + bea + cousin)
    human = np.array([0] * 3 + [-1] * 4 + [1] * 3 + [-1] * 4 + [-1] * 4)
    return X, human, np.arange(3, 7), np.arange(10, 14), np.arange(14, 18)


def test_a_relative_between_two_named_relatives_that_no_clustering_parts_is_asked_about():
    """Rule 5's last bullet. Ann and Bea are named; their cousin's photos clear the direct bar for both and lead
    Ann by less than chance gives between two label sets of one person (the model's measured ``tell_apart``). Where
    one group holds both sisters' labels (the clustering could not part the family) the cousin is asked about, not
    named Ann; the sisters' own photos, which lead by far more, keep their names. Where the clustering put Bea
    apart, the group is Ann's alone and this rule does not read the lead (the other rules decide)."""
    X, human, ann_own, bea_own, cousin = _family(seed=0)
    kw = dict(groups=list(range(len(X))), quality=None, direct=SETTINGS.person_match_threshold, impostor=BARS.impostor)
    protos = assign_mod.build_prototypes(X[human >= 0], human[human >= 0].tolist())
    S = assign_mod.person_scores(protos, X[cousin])
    assert (S >= kw["direct"]).all() and ((S[:, 0] - S[:, 1]) > 0).all() and ((S[:, 0] - S[:, 1]) < BARS.tell_apart).all()
    # and each photo is nearer one of Ann's labels than any of Bea's (so rule 7's runner-up test does not read here)
    assert ((X[cousin] @ X[human == 0].T).max(axis=1) > (X[cousin] @ X[human == 1].T).max(axis=1)).all()
    family = np.zeros(len(X), np.int64)
    threat = naming.name_faces(X, human, clusters=family, fine_clusters=family, tell_apart=0.0, **kw)
    assert (threat.person[cousin] == 0).all()  # without the rule a threshold names her Ann
    res = naming.name_faces(X, human, clusters=family, fine_clusters=family, tell_apart=BARS.tell_apart, **kw)
    assert (res.person[cousin] < 0).all() and res.vetoed[cousin].all()
    assert (res.person[ann_own] == 0).all() and (res.person[bea_own] == 1).all()
    asked = {i for s in res.suggestions if s.kind in ("face_is_person", "cluster_is_person") for i in s.rows}
    assert set(cousin.tolist()) <= asked
    apart = np.array([0] * 7 + [1] * 7 + [0] * 4)  # Bea's own group; Ann's holds only Ann's labels
    assert (naming.name_faces(X, human, clusters=apart, fine_clusters=apart, tell_apart=BARS.tell_apart, **kw).person[cousin] == 0).all()


def test_a_face_nearer_one_of_the_runner_ups_labels_than_any_of_its_persons_is_asked_about():
    """Rule 7 with the runner-up's labels. The cousin's scores favour Ann as a whole, but one of Bea's labelled photos
    is nearer her than any of Ann's: she is asked about, not named. Measured with no clustering, so no other rule
    reads; the sisters' own photos keep their names."""
    X, human, ann_own, bea_own, cousin = _family(seed=11, cousin_like=(0.4, 0.2))
    bea_labels = np.flatnonzero(human == 1)
    near = cousin[0]
    X[bea_labels[0]] = X[bea_labels[0]] + 0.3 * X[near]  # one photo of Bea much like the cousin
    X[bea_labels[0]] /= np.linalg.norm(X[bea_labels[0]])
    kw = dict(groups=list(range(len(X))), quality=None, clusters=None, direct=SETTINGS.person_match_threshold,
              impostor=BARS.impostor)
    protos = assign_mod.build_prototypes(X[human >= 0], human[human >= 0].tolist())
    s = assign_mod.person_scores(protos, X[near][None])[0]
    assert s[0] > s[1] >= kw["direct"]
    assert (X[bea_labels] @ X[near]).max() > (X[human == 0] @ X[near]).max()
    res = naming.name_faces(X, human, **kw)
    assert res.person[near] < 0 and res.vetoed[near]
    assert (res.person[ann_own] == 0).all() and (res.person[bea_own] == 1).all()


def test_names_given_on_the_weakest_tie_are_put_to_the_user():
    """A group of its own at the stricter link, inside the coarse group that holds Ann's labels and nobody else's,
    whose faces clear the bar on their own: named Ann (rule 5 has no figure against it: a person's own second group
    looks the same, lfw_dev's Tim Henman), and asked about as a whole ("check_names"), so one answer confirms the
    names or takes them away. Ann's own photos, tied to her labels at the stricter link, are not asked about; an
    incremental run (no stricter clustering) asks nothing of the kind."""
    from face_pipeline_tests.core.test_organize import Space

    sp = Space(seed=4)
    X = np.stack([sp.face(ann=0.8) for _ in range(7)] + [sp.face(ann=0.56, sis=0.6) for _ in range(5)])
    human = np.array([0] * 3 + [-1] * 9)
    own, other = np.arange(3, 7), np.arange(7, 12)
    coarse, fine = np.zeros(len(X), np.int64), np.array([0] * 7 + [1] * 5)
    kw = dict(groups=list(range(len(X))), quality=None, direct=SETTINGS.person_match_threshold, impostor=BARS.impostor,
              tell_apart=BARS.tell_apart)
    res = naming.name_faces(X, human, clusters=coarse, fine_clusters=fine, **kw)
    assert (res.person[own] == 0).all() and (res.person[other] == 0).all()
    checks = [s for s in res.suggestions if s.kind == "check_names"]
    assert [(sorted(s.rows), s.person) for s in checks] == [(other.tolist(), 0)]
    assert checks[0].score >= kw["direct"]
    alone = naming.name_faces(X, human, clusters=coarse, fine_clusters=None, candidates=other.tolist(), **kw)
    assert not [s for s in alone.suggestions if s.kind == "check_names"]



def _ages(sp, who: str, ages: int, photos: int = 4) -> list[list[np.ndarray]]:
    """``who`` photographed at ``ages`` ages (``photos`` each, age 0 the oldest): each age mixes two directions of
    the face's own path with the next one's, so one age is a close neighbour of the next (~0.54, above the stricter
    link) and nothing like an age two steps away (~0.18, inside the impostor range)."""
    return [[sp.face(**{f"{who}{t}": 0.6, f"{who}{t + 1}": 0.6, f"{who}{t + 2}": 0.3}) for _ in range(photos)] for t in range(ages)]


def _growing_up(seed: int = 3):
    """Pat at five ages (3 photos of the oldest labelled), Quinn (3 labels, 2 more photos) and a stranger (4
    photos), grouped as a clustering that cut Pat at every age."""
    from face_pipeline_tests.core.test_organize import Space

    sp = Space(seed=seed)
    X = np.stack([f for age in _ages(sp, "pat", 5) for f in age] + [sp.face(q=0.8) for _ in range(5)] + [sp.face(x=0.8) for _ in range(4)])
    pat = [np.arange(4 * t, 4 * t + 4) for t in range(5)]
    human = np.full(len(X), -1)
    human[pat[0][:3]] = 0
    human[20:23] = 1
    groups = np.array([t for t in range(5) for _ in range(4)] + [5] * 5 + [6] * 4)
    return X, human, groups, pat, np.arange(25, 29)


def _graph(X: np.ndarray):
    from face_pipeline.core.clustering.neighbours import knn_graph

    return knn_graph(X, 8)


def _kw(X: np.ndarray, groups: np.ndarray, neighbours=True) -> dict:
    return dict(groups=list(range(len(X))), quality=None, clusters=groups, fine_clusters=groups, direct=SETTINGS.person_match_threshold,
                impostor=BARS.impostor, tell_apart=BARS.tell_apart, neighbours=_graph(X) if neighbours else None)


def test_a_person_growing_up_is_found_one_confirmed_step_at_a_time():
    """Issue 7's ageing library: a child's face is far from the adult's labels, so no score against them can name
    it or even ask about it on its own. A chain of the person's own photos can: the age next to one already named
    is asked about ("are these Pat?", its evidence the closest pair, at the stricter link), never named, and once a
    person says yes the age after it is reachable. The stranger is never asked about as Pat, and no question
    skips an age (each step starts from photos that are Pat's already)."""
    X, human, groups, pat, stranger = _growing_up()
    kw = _kw(X, groups)
    assert (X[pat[2]] @ X[human == 0].T).max() < BARS.impostor  # two ages away: inside the impostor range of the labels
    assert all((X[pat[t]] @ X[pat[t + 1]].T).max() >= naming.FINE_LINK for t in range(4))  # each age a close neighbour of the next
    without = naming.name_faces(X, human, **{**kw, "neighbours": None})
    assert not [s for s in without.suggestions if s.person == 0 and set(s.rows) & set(pat[2].tolist())]  # no chain, no question
    confirmed = []
    for _ in range(5):
        res = naming.name_faces(X, human, **kw)
        assert (res.person[stranger] < 0).all()
        pats = (human == 0) | (res.person == 0)
        steps = [s for s in res.suggestions if s.kind in ("cluster_is_person", "face_is_person") and s.person == 0 and not pats[list(s.rows)].all()]
        assert not [s for s in steps if set(s.rows) & set(stranger.tolist())]
        if not steps:
            break
        step = max(steps, key=lambda s: s.score)
        assert step.score >= naming.FINE_LINK and step.floor == BARS.impostor
        (t,) = {t for t in range(5) for i in step.rows if i in pat[t]}
        assert t >= 1 and pats[pat[t - 1]].all()  # the step starts from Pat's photos
        assert step.evidence in pat[t - 1]  # and the question shows the photo it starts from, beside it
        assert not pats[np.concatenate(pat[t:])].any()  # and nothing past it is named Pat before it is confirmed
        human[list(step.rows)] = 0  # a person says yes
        confirmed.append(t)
    final = naming.name_faces(X, human, **kw)
    assert (final.person[np.concatenate(pat)] == 0).all(), confirmed
    assert (final.person[stranger] < 0).all()
    assert confirmed and confirmed == sorted(confirmed)


def test_a_step_between_two_named_people_is_not_asked():
    """A face whose closest named faces are two people's, within what chance gives between two label sets of one
    person (``tell_apart``), is between them: the step cannot say whose it is, so no chain question asks. Pat and
    Quinn each at two ages (the oldest labelled, the next named); their younger faces share a look (cousins), and
    the face has that look: a step to either, far from both people's labels."""
    from face_pipeline_tests.core.test_organize import Space

    sp = Space(seed=5)

    def person(who: str, young_look: str) -> list[np.ndarray]:
        return ([sp.face(**{f"{who}0": 0.6, f"{who}1": 0.6, f"{who}2": 0.3}) for _ in range(4)]
                + [sp.face(**{f"{who}1": 0.55, f"{who}2": 0.4, young_look: 0.6}) for _ in range(4)])

    X = np.stack(person("pat", "kin") + person("quinn", "kin") + [sp.face(kin=0.9, pat2=0.2, quinn2=0.2)])
    human = np.array([0] * 3 + [-1] * 5 + [1] * 3 + [-1] * 5 + [-1])
    coarse = fine = np.array([0] * 8 + [1] * 8 + [2])  # each person's two ages one group (their names not in question)
    b = len(X) - 1

    def run(X):
        res = naming.name_faces(X, human, **{**_kw(X, coarse), "fine_clusters": fine})
        assert (res.person[4:8] == 0).all() and (res.person[12:16] == 1).all() and res.person[b] < 0
        assert (X[b] @ X[human >= 0].T).max() < BARS.impostor  # far from both people's labels
        return res, (X[b] @ X[4:8].T).max(), (X[b] @ X[12:16].T).max()

    res, to_pat, to_quinn = run(X)
    assert min(to_pat, to_quinn) >= naming.FINE_LINK and abs(to_pat - to_quinn) <= BARS.tell_apart, (to_pat, to_quinn)
    assert not [s for s in res.suggestions if b in s.rows]
    # Quinn's younger photos without that look: the face is Pat's next age by the step, and is asked about as Pat.
    X[12:16] = np.stack(person("quinn", "quinn9")[4:])
    res, to_pat, to_quinn = run(X)
    assert to_pat >= naming.FINE_LINK and to_pat - BARS.tell_apart > to_quinn
    assert [(s.kind, s.person) for s in res.suggestions if b in s.rows] == [("face_is_person", 0)]


def test_what_a_chain_step_is_not():
    """A step is a pair of two photos' faces, at the stricter link, that nobody called different people, from a face
    good enough to carry a name (rule 4) whose name is not itself in question. Pat at two ages (the oldest labelled, the next named) and one face of the
    age after: asked about as Pat by its step; not when it shares a photo with Pat's face, not when a person said it
    and Pat's younger faces are different people, not when the only face it steps from is a poor label."""
    from face_pipeline_tests.core.test_organize import Space

    sp = Space(seed=7)
    pat = _ages(sp, "pat", 3)
    X = np.stack(pat[0] + pat[1] + [pat[2][0]])
    human = np.array([0] * 3 + [-1] * 6)
    coarse = np.array([0] * 8 + [1])
    young, younger = np.arange(4, 8), len(X) - 1
    # The younger age apart from the labels at the stricter link: its names are on the weakest tie and put to the
    # user (check_names), and a name in question starts no step; confirmed, they are labels the next age is named by.
    apart = naming.name_faces(X, human, **{**_kw(X, coarse), "fine_clusters": np.array([0] * 4 + [1] * 4 + [2])})
    assert [(s.kind, s.rows) for s in apart.suggestions] == [("check_names", tuple(young.tolist()))]
    confirmed = np.where(np.isin(np.arange(len(X)), young), 0, human)
    after = naming.name_faces(X, confirmed, **{**_kw(X, coarse), "fine_clusters": np.array([0] * 4 + [1] * 4 + [2])})
    assert after.person[younger] == 0  # once they are labels, the next age clears the bar against them on its own
    kw = {**_kw(X, coarse), "fine_clusters": np.array([0] * 8 + [1])}  # tied at the stricter link: not in question
    assert (X[younger] @ X[human == 0].T).max() < BARS.impostor < naming.FINE_LINK <= (X[younger] @ X[young].T).max()

    def asked(X=X, human=human, **over) -> list:
        res = naming.name_faces(X, human, **{**kw, **over})
        assert (res.person[young] == 0).all() and res.person[younger] < 0
        return [(s.kind, s.person) for s in res.suggestions if younger in s.rows]

    assert asked() == [("face_is_person", 0)]
    photos = list(range(len(X)))
    photos[younger] = photos[young[0]]  # in one photo with one of Pat's younger faces: two people
    assert asked(groups=photos) == []
    assert asked(cannot_link=[(younger, int(f)) for f in young]) == []
    assert asked(cannot_link=[(younger, int(young[0]))]) == [("face_is_person", 0)]  # the other younger faces still step
    # The only face it steps from is a label: good, it is asked about; too poor to carry a name (rule 4), it is not.
    lone = np.stack(pat[0][:3] + [pat[1][0], pat[2][0]])
    lone_human = np.array([0, 0, 0, 0, -1])
    lone_kw = {**_kw(lone, np.array([0, 0, 0, 1, 2])), "fine_clusters": np.array([0, 0, 0, 1, 2])}
    good = naming.name_faces(lone, lone_human, quality=np.full(5, 0.9), **{k: v for k, v in lone_kw.items() if k != "quality"})
    assert [(s.kind, s.person) for s in good.suggestions if 4 in s.rows] == [("face_is_person", 0)]
    poor = naming.name_faces(lone, lone_human, quality=np.array([0.9, 0.9, 0.9, 0.1, 0.9]),
                             **{k: v for k, v in lone_kw.items() if k != "quality"})
    assert [s for s in poor.suggestions if 4 in s.rows] == []


def test_a_group_one_of_whose_faces_was_rejected_is_asked_about_face_by_face():
    """Two photos of Pat's next age, one group at the stricter link, a step from Pat's named photos: asked about as a
    group. A person said one of them is not Pat: the group is not one person, so it is not asked about as a whole;
    the rejected face is never asked about Pat again, the other is, alone, on its own step."""
    from face_pipeline_tests.core.test_organize import Space

    sp = Space(seed=7)
    pat = _ages(sp, "pat", 3)
    X = np.stack(pat[0] + pat[1] + pat[2][:2])
    human = np.array([0] * 3 + [-1] * 7)
    coarse, fine = np.array([0] * 8 + [1] * 2), np.array([0] * 8 + [1] * 2)
    kw = {**_kw(X, coarse), "fine_clusters": fine}
    younger = [8, 9]
    res = naming.name_faces(X, human, **kw)
    assert [(s.kind, s.rows, s.person) for s in res.suggestions if set(s.rows) & set(younger)] == [("cluster_is_person", (8, 9), 0)]
    res = naming.name_faces(X, human, rejected={8: {0}}, **kw)
    assert [(s.kind, s.rows, s.person) for s in res.suggestions if set(s.rows) & set(younger)] == [("face_is_person", (9,), 0)]
    res = naming.name_faces(X, human, rejected={8: {0}, 9: {0}}, **kw)
    assert not [s for s in res.suggestions if set(s.rows) & set(younger) and s.person == 0]


def test_a_question_shows_the_photo_of_the_person_its_faces_look_most_like():
    """Beside "are these Pat?" the review page shows the photo of Pat the faces resemble (``evidence``), not Pat's
    best portrait: Pat labelled at two looks (beard, no beard) and a group of unnamed bearded faces that only
    resembles him; the question points at a bearded label, whichever label is Pat's best."""
    from face_pipeline_tests.core.test_organize import Space

    sp = Space(seed=11)
    shaved = [sp.face(pat=0.75, shaved=0.45) for _ in range(3)]
    bearded = [sp.face(pat=0.6, beard=0.6) for _ in range(2)]
    group = [sp.face(pat=0.38, beard=0.6) for _ in range(4)]  # near Pat's bearded photos, not near enough to name
    X = np.stack(shaved + bearded + group)
    human = np.array([0, 0, 0, 0, 0, -1, -1, -1, -1])
    clusters = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
    res = naming.name_faces(X, human, groups=list(range(len(X))), quality=None, clusters=clusters, fine_clusters=clusters,
                            direct=SETTINGS.person_match_threshold, impostor=BARS.impostor)
    (q,) = [s for s in res.suggestions if s.person == 0 and set(s.rows) == {5, 6, 7, 8}]
    assert (res.person[5:] < 0).all() and q.evidence in (3, 4)
    assert not [s for s in res.suggestions if s.kind == "same_person" and s.evidence is not None]
