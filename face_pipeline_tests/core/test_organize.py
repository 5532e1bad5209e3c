"""Tests for organising the library (core.organize): naming by the rules of core.naming (chains become suggestions), stable
unknown-cluster ids, the incremental path for a new batch, and the pipeline's audit trail.

A library here is built without the detector: real SQLite (migrated to head) in a private home, SQL rows
inserted directly, synthetic unit vectors written to the per-batch embedding files (what organize reads), and
human labels made through the real label operations (core.labels). Each identity is a direction of a fixed
orthonormal basis; a face is a mix of named directions plus private noise orthogonal to all of them, so the
cosine of two faces is (to within ~0.02) the dot product of their named coefficients: e.g. ``alice=0.85`` faces
meet each other at ~0.72 and the centroid of three at ~0.8, while different people meet at ~0.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from face_pipeline.core import assign as assign_mod
from face_pipeline.core import naming
from face_pipeline.core import labels, organize
from face_pipeline.core.db import get_engine, session_scope, upgrade
from face_pipeline.core.db.schema import (
    PHOTO_OK,
    FaceAssignmentEvent,
    FaceInstance,
    FaceRejection,
    Person,
    Photo,
    PhotoBatch,
    PipelineState,
)
from face_pipeline.core.embedding_files import load_embeddings, save_batch_embeddings
from face_pipeline.core.face_state import payload_of as face_payload
from face_pipeline.settings import Settings

DIM = 512


# ---------------------------------------------------------------------------------------------- builders ----
class Space:
    """Named orthonormal directions (identities, looks) and faces mixed from them plus private noise."""

    def __init__(self, seed: int = 0, n: int = 64):
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.normal(size=(DIM, n)))
        self.basis = q.T.astype(np.float64)  # (n, DIM) orthonormal rows
        self.index: dict[str, int] = {}
        self.rng = np.random.default_rng(seed + 1)

    def dir(self, name: str) -> np.ndarray:
        if name not in self.index:
            self.index[name] = len(self.index)
        return self.basis[self.index[name]]

    def face(self, **parts: float) -> np.ndarray:
        """Unit vector ``sum(coef * direction)`` + ``sqrt(1 - sum(coef^2))`` * noise orthogonal to the basis."""
        v = np.zeros(DIM)
        for name, coef in parts.items():
            v += coef * self.dir(name)
        rest = 1.0 - sum(c * c for c in parts.values())
        assert rest >= 0, parts
        noise = self.rng.normal(size=DIM)
        noise -= self.basis.T @ (self.basis @ noise)
        v += np.sqrt(rest) * noise / np.linalg.norm(noise)
        return (v / np.linalg.norm(v)).astype(np.float32)


@dataclass
class Library:
    """A library in a private home; ``truth`` maps face id → the identity it was drawn from."""

    settings: Settings
    space: Space
    truth: dict[str, str] = field(default_factory=dict)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    store: object | None = None  # a FaceVectorStore when the test needs Qdrant as well

    def add_batch(self, batch: str, photos: list[tuple[str, list[tuple[str, np.ndarray]]]]) -> list[str]:
        """Insert a batch: ``photos`` = [(image_id, [(identity, vector), ...])]; returns the new face ids."""
        face_ids, vecs, payloads = [], [], []
        with session_scope(self.settings.sql_url) as s:
            s.add(PhotoBatch(name=batch, source_dir=f"/photos/{batch}", status="embedded", photos=len(photos)))
            s.flush()
            for image_id, faces in photos:
                s.add(Photo(batch=batch, path=f"/photos/{batch}/{image_id}.jpg", rel_path=f"{image_id}.jpg", image_id=image_id,
                            status=PHOTO_OK, faces=len(faces), width=640, height=480))
                for n, (who, v) in enumerate(faces):
                    f = FaceInstance(face_id=f"{image_id}_face{n}", image_id=image_id, batch=batch, face_index=n,
                                     x1=10.0 + 150 * n, y1=10.0, x2=110.0 + 150 * n, y2=130.0, landmarks=[[0.0, 0.0]] * 5,
                                     det_score=0.9, quality_score=0.8, embedding_norm=20.0, embedding_model="w600k_mbf",
                                     embedded=True, payload_dirty=False)
                    s.add(f)
                    s.flush()
                    face_ids.append(f.face_id)
                    vecs.append(v)
                    payloads.append(face_payload(f, batch))
                    self.truth[f.face_id] = who
                    self.vectors[f.face_id] = v
        save_batch_embeddings(self.settings, batch, face_ids, np.stack(vecs))
        if self.store is not None:
            from face_pipeline.core.vectors import FaceRecord

            self.store.ensure().upsert([FaceRecord(f, v, p) for f, v, p in zip(face_ids, vecs, payloads)])
        return face_ids

    def of(self, who: str) -> list[str]:
        return sorted(f for f, t in self.truth.items() if t == who)


def photos_of(space: Space, prefix: str, who: str, n: int, **parts: float) -> list[tuple[str, list]]:
    """``n`` single-face photos ``{prefix}{i}`` of identity ``who`` (default: 0.85 of its own direction)."""
    parts = parts or {who: 0.85}
    return [(f"{prefix}{i:02d}", [(who, space.face(**parts))]) for i in range(n)]


def label(settings: Settings, face_ids, name: str) -> str:
    """A user labels faces through the real label operation; returns the person id."""
    pid = None
    for f in face_ids:
        pid = labels.label_face(settings, f, name).person_id
    return pid


def face(settings: Settings, face_id: str) -> FaceInstance:
    with session_scope(settings.sql_url) as s:
        return s.get(FaceInstance, face_id)


def events(settings: Settings, after: int = 0) -> list[FaceAssignmentEvent]:
    with session_scope(settings.sql_url) as s:
        return list(s.scalars(select(FaceAssignmentEvent).where(FaceAssignmentEvent.id > after).order_by(FaceAssignmentEvent.id)))


def newest_event(settings: Settings) -> int:
    with session_scope(settings.sql_url) as s:
        return int(s.scalar(select(func.max(FaceAssignmentEvent.id))) or 0)


def state(settings: Settings, key: str) -> str | None:
    with session_scope(settings.sql_url) as s:
        row = s.get(PipelineState, key)
        return row.value if row else None


def assert_consistent(settings: Settings) -> None:
    """Invariants after any organise step: one person at most once per photo; assigned faces' cluster is their
    person; automatic assignments carry a confidence and a margin."""
    assert organize.same_photo_conflicts(settings) == []
    with session_scope(settings.sql_url) as s:
        for f in s.scalars(select(FaceInstance)):
            if f.person_id is not None:
                assert f.cluster_id == f.person_id, f.face_id
                if f.assignment_source == "auto":
                    assert f.person_confidence is not None and f.person_margin is not None, f.face_id
            else:
                assert f.assignment_source is None, f.face_id


@pytest.fixture(scope="module")
def _migrated(tmp_path_factory) -> Path:
    """An empty home migrated to head once per module (migrations cost ~1 s on a busy machine); tests copy it."""
    s = Settings(home=tmp_path_factory.mktemp("migrated") / "home", database_url=None, qdrant_url=None)
    upgrade(s.sql_url)
    get_engine(s.sql_url).dispose()
    return s.home_dir


@pytest.fixture
def settings(home, _migrated) -> Settings:
    """Overrides conftest's ``settings``: the same private, env-cleared home, schema copied instead of migrated."""
    shutil.copytree(_migrated, home)
    return Settings(home=home)


@pytest.fixture
def library(settings) -> Library:
    return Library(settings=settings, space=Space(seed=3))


def standard_scene(lib: Library) -> dict[str, list[str]]:
    """Alice (3 labelled + 4 more photos), Bob (3 labelled + 3 more), two unknown people (Uma 4, Ulf 3) and a
    loner; Alice and Bob are labelled through the real label operation."""
    sp = lib.space
    lib.add_batch("b1", [
        *photos_of(sp, "alice", "alice", 7),
        *photos_of(sp, "bob", "bob", 6),
        *photos_of(sp, "uma", "uma", 4),
        *photos_of(sp, "ulf", "ulf", 3),
        ("loner", [("loner", sp.face(loner=0.85))]),
    ])
    alice, bob = lib.of("alice"), lib.of("bob")
    label(lib.settings, alice[:3], "Alice")
    label(lib.settings, bob[:3], "Bob")
    return {"alice": alice, "bob": bob, "uma": lib.of("uma"), "ulf": lib.of("ulf"), "loner": lib.of("loner")}


def person_id(settings: Settings, name: str) -> str:
    with session_scope(settings.sql_url) as s:
        return s.scalars(select(Person.person_id).where(Person.name == name)).one()


# ------------------------------------------------------------------------------------------ supervised ----
def test_assignment_above_threshold_records_confidence_margin_and_prototypes(library):
    settings = library.settings
    who = standard_scene(library)
    alice, bob = person_id(settings, "Alice"), person_id(settings, "Bob")
    before = newest_event(settings)

    rep = organize.supervised_assignment(settings)

    assert (rep.faces, rep.human_labelled, rep.persons) == (21, 6, 2)
    assert rep.assigned == rep.newly_assigned == 4 + 3
    assert rep.changed_person == rep.unassigned_again == 0
    assert rep.threshold == settings.person_match_threshold
    for fid in who["alice"][3:] + who["bob"][3:]:
        f = face(settings, fid)
        assert f.person_id == (alice if fid in who["alice"] else bob), fid
        assert f.assignment_source == "auto"
        assert f.person_confidence >= settings.person_match_threshold
        assert 0.7 < f.person_confidence <= 1.0  # cosine to ~0.8-similar prototypes, not a made-up number
        assert f.person_margin > 0.5  # the runner-up (the other person) scores ~0
    for fid in who["uma"] + who["ulf"] + who["loner"]:
        f = face(settings, fid)
        assert f.person_id is None and f.person_confidence is None and f.person_margin is None, fid
    for fid in who["alice"][:3]:  # the human labels themselves
        f = face(settings, fid)
        assert (f.person_id, f.assignment_source, f.person_confidence) == (alice, "manual", 1.0)

    new = events(settings, before)
    assert len(new) == 7 and {e.action for e in new} == {"auto_assign"} and {e.actor for e in new} == {"pipeline"}
    assert {e.face_id for e in new} == set(who["alice"][3:] + who["bob"][3:])

    # Nothing changed: a second run writes nothing.
    mark = newest_event(settings)
    rep2 = organize.supervised_assignment(settings)
    assert rep2.assigned == 7 and rep2.newly_assigned == rep2.changed_person == rep2.unassigned_again == 0
    assert events(settings, mark) == []
    assert_consistent(settings)


def test_human_labels_are_never_changed_even_when_they_look_like_someone_else(library):
    settings, sp = library.settings, library.space
    who = standard_scene(library)
    # Two faces that look exactly like Bob, but a person said they are Alice: one by hand, one by naming a cluster.
    manual_id, cluster_id = library.add_batch("odd", [
        ("oddm", [("bob", sp.face(bob=0.9))]),
        ("oddc", [("bob", sp.face(bob=0.9))]),
    ])
    with session_scope(settings.sql_url) as s:
        s.get(FaceInstance, cluster_id).cluster_id = "unknown_cluster_77"
    label(settings, [manual_id], "Alice")
    res = labels.label_cluster(settings, "unknown_cluster_77", "Alice", merge=True)
    assert res.changed == [cluster_id]
    alice = person_id(settings, "Alice")
    # And a Bob face an earlier (now stale) pipeline run gave to Alice: automatic, so it may be corrected.
    stale = who["bob"][5]
    with session_scope(settings.sql_url) as s:
        f = s.get(FaceInstance, stale)
        f.person_id, f.cluster_id, f.assignment_source, f.person_confidence, f.person_margin = alice, alice, "auto", 0.5, 0.1

    for _ in range(2):
        organize.supervised_assignment(settings)
        m, c = face(settings, manual_id), face(settings, cluster_id)
        assert (m.person_id, m.assignment_source, m.person_confidence) == (alice, "manual", 1.0)
        assert (c.person_id, c.assignment_source, c.person_confidence) == (alice, "cluster", 1.0)
    # The automatic one was corrected: no longer Alice. Nor Bob: it is more like one of the photos a person called
    # Alice (the Bob look-alikes) than like any of Bob's labels, so it is asked about (rule 7, the runner-up's labels).
    assert face(settings, stale).person_id is None
    pipeline_faces = {e.face_id for e in events(settings) if e.actor == "pipeline"}
    assert manual_id not in pipeline_faces and cluster_id not in pipeline_faces
    assert_consistent(settings)


def test_rejections_and_same_photo_cannot_link_are_respected(library):
    settings, sp = library.settings, library.space
    who = standard_scene(library)
    alice = person_id(settings, "Alice")
    twin_a, twin_b, beside, *_ = library.add_batch("b2", [
        # two Alice-like faces in one photo (a poster behind her): at most one can be Alice
        ("twins", [("alice", sp.face(alice=0.9)), ("alice-poster", sp.face(alice=0.75))]),
        # a photo where a person already labelled Alice: an Alice-like second face must not be her too
        ("withlabel", [("alice-poster", sp.face(alice=0.8)), ("alice", sp.face(alice=0.85))]),
    ])
    labelled_beside = "withlabel_face1"
    label(settings, [labelled_beside], "Alice")

    organize.supervised_assignment(settings)
    assert face(settings, twin_a).person_id == alice  # the better face of the photo wins
    assert face(settings, twin_b).person_id is None
    assert face(settings, beside).person_id is None  # its photo already shows Alice (human label)
    assert face(settings, labelled_beside).assignment_source == "manual"

    # The user says an auto-assigned Alice face is not Alice: it loses her, and no later run gives her back.
    victim = who["alice"][4]
    assert face(settings, victim).person_id == alice
    labels.reject_face(settings, victim)
    with session_scope(settings.sql_url) as s:
        assert s.get(FaceRejection, (victim, alice)) is not None
    for _ in range(2):
        organize.supervised_assignment(settings)
        assert face(settings, victim).person_id is None
    # The rejection concerns that face only: Alice's other faces keep her.
    assert all(face(settings, f).person_id == alice for f in who["alice"] if f != victim)
    assert_consistent(settings)


def test_one_no_holds_back_a_relatives_other_photos_in_full_and_incremental_runs(library):
    """A daughter looks like her labelled mother: every photo of hers clears the direct bar against Mum's labels,
    and her group is a group of its own in which every face does, so the first run names her Mum. The user says one
    of them is not Mum (the real reject operation). From then on no run names a face more like that photo than like
    Mum's labels (naming rule 7): the next full run takes the name off her other photos, and a new photo of her in
    a later batch stays unnamed in the incremental run, which reads every face's rejections, not the batch's."""
    settings, sp = library.settings, library.space
    library.add_batch("b1", [*photos_of(sp, "mum", "mum", 6), *photos_of(sp, "daughter", "daughter", 5, mum=0.55, daughter=0.6)])
    mum_faces, daughter = library.of("mum"), library.of("daughter")
    label(settings, mum_faces[:3], "Mum")
    mum = person_id(settings, "Mum")
    organize.supervised_assignment(settings)
    assert all(face(settings, f).person_id == mum for f in daughter)  # the threat: a threshold names her
    labels.reject_face(settings, daughter[0])
    organize.supervised_assignment(settings)
    assert all(face(settings, f).person_id is None for f in daughter)
    assert all(face(settings, f).person_id == mum for f in mum_faces)
    (new_daughter, new_mum) = library.add_batch("b2", [("d_new", [("daughter", sp.face(mum=0.55, daughter=0.6))]),
                                                       ("m_new", [("mum", sp.face(mum=0.85))])])
    organize.organize_new_faces(settings, [new_daughter, new_mum])
    assert face(settings, new_daughter).person_id is None
    assert face(settings, new_mum).person_id == mum
    assert_consistent(settings)


def test_rerun_after_label_changes_moves_and_unassigns_automatic_faces(library):
    settings = library.settings
    who = standard_scene(library)
    organize.supervised_assignment(settings)
    alice, bob = person_id(settings, "Alice"), person_id(settings, "Bob")
    assert all(face(settings, f).person_id == bob for f in who["bob"])

    # The user decides the "Bob" labels were someone else: they move every labelled face to a new person...
    for f in who["bob"][:3]:
        labels.reassign_face(settings, f, "Robert")
    # ...and takes back every Alice label.
    for f in who["alice"][:3]:
        labels.unassign_face(settings, f)
    robert = person_id(settings, "Robert")
    mark = newest_event(settings)

    rep = organize.supervised_assignment(settings)

    assert rep.changed_person == 3 and rep.unassigned_again == 4
    for f in who["bob"][3:]:
        g = face(settings, f)
        assert (g.person_id, g.assignment_source, g.cluster_id) == (robert, "auto", robert)
    for f in who["alice"]:
        g = face(settings, f)
        assert g.person_id is None and g.assignment_source is None and g.person_confidence is None
        assert g.cluster_id is None  # back to the clustering stage
    new = events(settings, mark)
    assert {e.actor for e in new} == {"pipeline"}
    moves = {e.face_id: (e.from_person, e.to_person) for e in new if e.action == "auto_assign"}
    assert moves == {f: (bob, robert) for f in who["bob"][3:]}
    drops = {e.face_id: e.from_person for e in new if e.action == "auto_unassign"}
    assert drops == {f: alice for f in who["alice"][3:]}

    # The clustering stage picks Alice's faces up again as one unknown cluster.
    organize.cluster_unknown(settings)
    assert len({face(settings, f).cluster_id for f in who["alice"]}) == 1
    assert face(settings, who["alice"][0]).cluster_id.startswith("unknown_cluster_")
    assert_consistent(settings)


# ------------------------------------------------------------------------------------------ chains ----
# The geometry the chain test relies on is pinned here, so a change of the product defaults cannot turn it into
# a different test silently.
PINNED = dict(person_match_threshold=0.45, unknown_threshold=0.45, person_strategy="hybrid")


def test_a_chain_names_only_faces_outside_the_impostor_range_of_the_labels_themselves(settings):
    """Alice: 8 labelled frontal faces (``alice=0.85``) and one bridge face, a later look (``0.6 alice + 0.7
    older``), which clears the direct bar on its own. ``chained`` (0.36 alice + 0.8 older) resembles the bridge
    strongly (~0.78) but Alice's labels only at ~0.35: between the model's impostor bar and the direct bar. It
    shares a group with Alice's labels, so it may be named (rule 7 of core.naming, one hop from the labels),
    with its own score as confidence. ``faint`` (0.15 alice + 0.85 older) chains just as well but its own score
    is inside the impostor range: never named, however strong the chain (a chain step may only ask about it)."""
    sp = Space(seed=5)
    lib = Library(settings=Settings(home=settings.home, **PINNED), space=sp)
    lib.add_batch("b1", [
        *photos_of(sp, "alice", "alice", 8),
        ("bridge", [("alice", sp.face(alice=0.6, older=0.7))]),
        ("chained", [("alice", sp.face(alice=0.36, older=0.8))]),
        ("faint", [("alice", sp.face(alice=0.15, older=0.85))]),
        *photos_of(sp, "bob", "bob", 4),
        *photos_of(sp, "uma", "uma", 3),
    ])
    label(lib.settings, lib.of("alice")[:8], "Alice")
    alice = person_id(lib.settings, "Alice")
    bridge, chained, faint = "bridge_face0", "chained_face0", "faint_face0"
    label(lib.settings, lib.of("bob")[:2], "Bob")

    # Preconditions that make this a test of chains: own scores vs the bars, and the chain itself.
    ids, X = load_embeddings(lib.settings)
    row = {f: i for i, f in enumerate(ids)}
    labelled = lib.of("alice")[:8]
    protos = assign_mod.build_prototypes(X[[row[f] for f in labelled]], ["alice"] * 8)
    own = {f: float(assign_mod.person_scores(protos, X[[row[f]]], "hybrid")[0, 0]) for f in (bridge, chained, faint)}
    bar = naming.bars_for(lib.settings.model_name).impostor
    assert own[bridge] > 0.5
    assert bar < own[chained] < PINNED["person_match_threshold"], own
    assert own[faint] < bar, own
    for f in (chained, faint):
        assert float(X[row[f]] @ X[row[bridge]]) > PINNED["unknown_threshold"] + 0.1

    rep = organize.supervised_assignment(lib.settings)
    assert face(lib.settings, bridge).person_id == alice
    c = face(lib.settings, chained)
    if c.person_id is not None:  # named through its group: recorded with its own score, never inside the impostor range
        assert (c.person_id, c.assignment_source) == (alice, "auto")
        assert c.person_confidence == pytest.approx(own[chained], abs=0.02)
    else:  # or asked about
        assert [s for s in rep.suggestions if s.person_id == alice and chained in s.face_ids]
    assert face(lib.settings, faint).person_id is None
    # never asked on its own score; only as a step of a chain (the bridge, named Alice, is its close neighbour),
    # whose evidence is that step: a pair at the direct bar or above
    about_faint = [s for s in rep.suggestions if faint in s.face_ids]
    assert about_faint and all(s.person_id == alice and s.score >= PINNED["person_match_threshold"] > own[faint] for s in about_faint), about_faint
    assert all(face(lib.settings, f).person_id is None for f in lib.of("uma"))
    assert all(face(lib.settings, f).person_id == person_id(lib.settings, "Bob") for f in lib.of("bob"))
    assert_consistent(lib.settings)


# --------------------------------------------------------------------------------------------- clusters ----
def test_unknown_clusters_get_stable_ids_across_runs(library):
    settings, sp = library.settings, library.space
    who = standard_scene(library)
    organize.supervised_assignment(settings)
    rep = organize.cluster_unknown(settings)

    assert (rep.unknown_faces, rep.clusters, rep.clustered_faces, rep.noise) == (8, 2, 7, 1)
    assert (rep.new_ids, rep.kept_ids, rep.sizes) == (2, 0, [4, 3])
    uma = {face(settings, f).cluster_id for f in who["uma"]}
    ulf = {face(settings, f).cluster_id for f in who["ulf"]}
    assert uma == {"unknown_cluster_1"} and ulf == {"unknown_cluster_2"}  # new ids: largest cluster first
    loner = who["loner"][0]
    assert face(settings, loner).cluster_id == f"unknown_noise_{loner}"
    assert state(settings, "next_cluster_number") == "3"
    for f in who["alice"] + who["bob"]:  # known people's faces are not unknown clusters
        assert not face(settings, f).cluster_id.startswith("unknown_")

    # Same faces again: same ids, nothing new.
    rep = organize.cluster_unknown(settings)
    assert (rep.kept_ids, rep.new_ids) == (2, 0)
    assert {face(settings, f).cluster_id for f in who["uma"]} == {"unknown_cluster_1"}

    # New photos: one more of Uma, three of a new person Ugo. Uma's cluster keeps its id, Ugo gets the next.
    more = library.add_batch("b2", [("uma9", [("uma", sp.face(uma=0.85))]), *photos_of(sp, "ugo", "ugo", 3)])
    rep = organize.cluster_unknown(settings)
    assert (rep.clusters, rep.kept_ids, rep.new_ids) == (3, 2, 1)
    assert {face(settings, f).cluster_id for f in who["uma"] + [more[0]]} == {"unknown_cluster_1"}
    assert {face(settings, f).cluster_id for f in who["ulf"]} == {"unknown_cluster_2"}
    assert {face(settings, f).cluster_id for f in library.of("ugo")} == {"unknown_cluster_3"}
    assert state(settings, "next_cluster_number") == "4"

    # Ulf's cluster is named by the user and leaves the unknowns; its number is never handed out again.
    labels.label_cluster(settings, "unknown_cluster_2", "Ulf")
    library.add_batch("b3", photos_of(sp, "uwe", "uwe", 2))
    organize.cluster_unknown(settings)
    assert {face(settings, f).cluster_id for f in library.of("uwe")} == {"unknown_cluster_4"}
    assert state(settings, "next_cluster_number") == "5"
    assert {face(settings, f).cluster_id for f in library.of("ugo")} == {"unknown_cluster_3"}
    assert_consistent(settings)


def test_organize_new_faces_joins_known_people_and_existing_clusters(library):
    settings, sp = library.settings, library.space
    who = standard_scene(library)
    organize.supervised_assignment(settings)
    organize.cluster_unknown(settings)
    uma_cluster = face(settings, who["uma"][0]).cluster_id
    mark = newest_event(settings)

    new = library.add_batch("b2", [
        ("n_alice", [("alice", sp.face(alice=0.85))]),
        ("n_uma", [("uma", sp.face(uma=0.85))]),
        ("n_stranger", [("stranger", sp.face(stranger=0.85))]),
        ("n_group", [("bob", sp.face(bob=0.85)), ("ulf", sp.face(ulf=0.85))]),
    ])
    n_alice, n_uma, n_stranger, n_bob, n_ulf = new
    rep = organize.organize_new_faces(settings, new)

    assert (rep.new_faces, rep.assigned, rep.joined_clusters, rep.noise) == (5, 2, 2, 1)
    assert face(settings, n_alice).person_id == person_id(settings, "Alice")
    assert face(settings, n_bob).person_id == person_id(settings, "Bob")
    assert face(settings, n_uma).cluster_id == uma_cluster
    assert face(settings, n_ulf).cluster_id == face(settings, who["ulf"][0]).cluster_id != uma_cluster
    assert face(settings, n_stranger).cluster_id == f"unknown_noise_{n_stranger}"
    assert face(settings, n_stranger).person_id is None
    # Old faces were not touched by the incremental step.
    assert {face(settings, f).cluster_id for f in who["uma"]} == {uma_cluster}
    new_events = events(settings, mark)
    assert {e.face_id for e in new_events} == {n_alice, n_bob} and {e.actor for e in new_events} == {"pipeline"}
    assert_consistent(settings)


def test_a_batch_names_new_photos_of_someone_just_labelled_out_of_an_unknown_cluster(library):
    """Label one face of an unknown cluster, then a batch brings more photos of that person, before any full run:
    until one runs, the labelled face's cluster-mates are still an unknown cluster, and the new photos nearest them
    must still get the name (a CLI-only home has no nightly run to do it later)."""
    settings, sp = library.settings, library.space
    who = standard_scene(library)
    organize.supervised_assignment(settings)
    organize.cluster_unknown(settings)
    uma = label(settings, who["uma"][:1], "Uma")
    assert face(settings, who["uma"][1]).person_id is None  # her cluster-mates wait for the next full run
    new = library.add_batch("b2", photos_of(sp, "n", "uma", 4))
    organize.organize_new_faces(settings, new)
    assert all(face(settings, f).person_id == uma for f in new)


def test_organize_new_faces_groups_a_new_stranger_without_waiting_for_the_nightly_run(library):
    """Two photos of someone new in one batch: they match nobody and no existing cluster, so they form a new
    unknown cluster at once (a person can name it the same day); a lone stranger stays alone."""
    settings, sp = library.settings, library.space
    standard_scene(library)
    organize.supervised_assignment(settings)
    organize.cluster_unknown(settings)
    before = int(state(settings, "next_cluster_number"))

    new = library.add_batch("b2", [
        ("v1", [("vera", sp.face(vera=0.9))]),
        ("v2", [("vera", sp.face(vera=0.9))]),
        ("lone", [("otto", sp.face(otto=0.9))]),
    ])
    v1, v2, lone = new
    rep = organize.organize_new_faces(settings, new)

    assert (rep.new_clusters, rep.noise) == (1, 1)
    cid = face(settings, v1).cluster_id
    assert cid == face(settings, v2).cluster_id == f"unknown_cluster_{before}"
    assert face(settings, lone).cluster_id == f"unknown_noise_{lone}"
    assert state(settings, "next_cluster_number") == str(before + 1)  # the number is never handed out again
    assert_consistent(settings)


def test_organize_new_faces_on_a_rerun_batch_keeps_its_clusters(library):
    """A batch re-materialised (same photos, same face ids) goes through the incremental step again: faces that
    already hold an unknown cluster keep it, even a cluster that lies entirely inside that batch."""
    settings = library.settings
    who = standard_scene(library)
    organize.supervised_assignment(settings)
    organize.cluster_unknown(settings)
    before = {f: face(settings, f).cluster_id for f in library.truth}
    assert before[who["uma"][0]].startswith("unknown_cluster_")

    organize.organize_new_faces(settings, sorted(library.truth))  # every face of batch b1 again

    assert {f: face(settings, f).cluster_id for f in library.truth} == before
    rep = organize.cluster_unknown(settings)
    assert (rep.kept_ids, rep.new_ids) == (2, 0)
    assert state(settings, "next_cluster_number") == "3"
    assert_consistent(settings)


# ------------------------------------------------------------------------------------------------ events ----
def test_pipeline_events_are_invisible_to_the_label_change_sensor(library):
    settings = library.settings
    who = standard_scene(library)
    start = newest_event(settings)
    assert organize.human_label_changes_since(settings, 0) == (len(events(settings)), start)  # all by the user

    organize.supervised_assignment(settings)
    organize.cluster_unknown(settings)
    labels.unassign_face(settings, who["bob"][0])
    mark = newest_event(settings)
    organize.supervised_assignment(settings)  # re-checks Bob's faces after the user's change
    new = library.add_batch("b2", [("newbob", [("bob", library.space.face(bob=0.85))])])
    organize.organize_new_faces(settings, new)
    pipeline = [e for e in events(settings, start) if e.actor == "pipeline"]
    assert pipeline, "the pipeline wrote no events to test with"
    assert {e.action for e in pipeline} <= {"auto_assign", "auto_unassign"}

    n, newest = organize.human_label_changes_since(settings, mark)
    assert newest == newest_event(settings) and n == 0
    n, newest = organize.human_label_changes_since(settings, start)
    assert n == 1 and newest == newest_event(settings)  # the unassign only, not the pipeline's events

    labels.label_face(settings, who["uma"][0], "Uma")  # creates Uma + labels the face: two user events
    n, newest2 = organize.human_label_changes_since(settings, newest)
    assert (n, newest2) == (2, newest_event(settings))
    assert_consistent(settings)
