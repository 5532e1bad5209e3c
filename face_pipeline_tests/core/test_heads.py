"""Tests for projection heads in the product (core.heads): typed outcomes, train + gate + version, human labels
only, the named-person hook, re-embed + atomic alias switch, the live projector, and the retrain trigger.

Libraries are built without the detector (see test_organize): real SQLite, real Qdrant local mode, synthetic
unit vectors in the embedding files and in the ``faces`` collection, labels made through core.labels. The data
are well separated people (faces of a person meet at cosine ~0.64, different people at ~0), so raw ArcFace-like
space is already perfect on them: a head can at best tie, which is what makes the refusal test meaningful.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

torch = pytest.importorskip("torch")

from face_pipeline.core import consistency, heads, labels, organize, sync  # noqa: E402
from face_pipeline.core.db import get_engine, session_scope, upgrade  # noqa: E402
from face_pipeline.core.db.schema import FaceInstance, Person, ProjectionHead  # noqa: E402
from face_pipeline.core.train import TrainingStatus, load_checkpoint, project  # noqa: E402
from face_pipeline.core.vectors import PAYLOAD_FIELDS, FaceVectorStore, open_vector_client  # noqa: E402
from face_pipeline.settings import Settings  # noqa: E402
from face_pipeline_tests.core.test_organize import Library, Space, label, photos_of  # noqa: E402

PEOPLE, FACES, LABELLED = 10, 8, 6  # per person: FACES photos, the first LABELLED of them labelled by the user
SIDECAR_FIELDS = ("people", "faces", "epochs", "final_loss", "validation", "created_at", "embedding_model")


def build_library(home: Path) -> Settings:
    """The same photos and the same labels every time (seeded), in a new home: person ids are new uuids."""
    settings = Settings(home=home, database_url=None, qdrant_url=None)  # never a developer's server
    upgrade(settings.sql_url)
    sp = Space(seed=11)
    with open_vector_client(settings) as client:
        lib = Library(settings=settings, space=sp, store=FaceVectorStore(client, settings.qdrant_collection))
        photos = []
        for p in range(PEOPLE):
            photos += photos_of(sp, f"p{p:02d}_", f"p{p:02d}", FACES, **{f"p{p:02d}": 0.8})
        lib.add_batch("b1", photos)
        for p in range(PEOPLE):
            label(settings, lib.of(f"p{p:02d}")[:LABELLED], f"Person {p}")  # syncs the payloads to Qdrant too
    get_engine(settings.sql_url).dispose()  # checkpoint the WAL: the folder can be copied
    return settings


@pytest.fixture(scope="module")
def _template(tmp_path_factory) -> Path:
    return build_library(tmp_path_factory.mktemp("heads_template") / "home").home_dir


@pytest.fixture
def lib_settings(home, _template) -> Settings:
    """A labelled library in a private home (a copy of the module's template)."""
    shutil.copytree(_template, home)
    return judged(Settings(home=home))


def judged(settings: Settings) -> Settings:
    """These synthetic people are orthogonal, so no held-out stranger resembles a named person and the gate would
    (rightly) answer "not enough labels"; these tests are about what happens to a head once judged, so they waive
    that one minimum."""
    return settings.model_copy(update={"training_gate_min_strangers_at_risk": 0})


def heads_in_sql(settings: Settings) -> list[tuple[int, bool, bool]]:
    with session_scope(settings.sql_url) as s:
        return [(h.version, h.promoted, h.live) for h in s.scalars(select(ProjectionHead).order_by(ProjectionHead.version))]


def mark_promoted(settings: Settings, version: int) -> None:
    """Promote a head by hand. The switch tests must not depend on the gate's verdict for a given data set (that
    has tests of its own): marking the row promoted isolates the re-embed/alias mechanism from it."""
    with session_scope(settings.sql_url) as s:
        s.get(ProjectionHead, version).promoted = True


def proj_store(client) -> FaceVectorStore:
    return FaceVectorStore(client, heads.PROJ_ALIAS, dim=512)  # a residual head keeps raw space's 512 dimensions


# ------------------------------------------------------------------------------------------- too little ----
@pytest.mark.parametrize(
    "layout,missing",
    [({"solo": 5}, "people with >= 2 labelled faces"), ({"ann": 1, "ben": 1}, "people with >= 2 labelled faces"),
     ({"ann": 3, "ben": 3, "cy": 3}, "held out as strangers")],
    ids=["one-person", "two-people-one-face-each", "three-people-too-few-to-judge"],
)
def test_too_little_data_is_the_not_enough_labels_outcome_with_what_is_missing(settings, layout, missing):
    sp = Space(seed=2)
    lib = Library(settings=settings, space=sp)
    photos = []
    for who, n in layout.items():
        photos += photos_of(sp, f"{who}_", who, n)
    lib.add_batch("b1", photos)
    for who in layout:
        label(settings, lib.of(who), who.title())

    out = heads.train_and_gate(settings)  # an answer, not an exception
    assert out.status is TrainingStatus.NOT_ENOUGH_LABELS and not out.promoted
    assert out.missing and any(missing in m for m in out.missing), out.missing
    assert out.version is None and out.checkpoint is None
    assert "recommended" in out.reasons[0] and f"{sum(layout.values())} labelled faces of {len(layout)} people" in out.reasons[0]
    assert out.used_for.startswith("nothing")
    assert heads_in_sql(settings) == []  # nothing was versioned
    assert not (settings.artifacts_dir / "heads").exists() or not any((settings.artifacts_dir / "heads").iterdir())
    assert heads.live_named_head(settings) is None


# ------------------------------------------------------------------------------------------ reproducible ----
def test_training_is_reproducible_across_fresh_homes(lib_settings, tmp_path):
    a = lib_settings  # the module's library, copied
    b = judged(build_library(tmp_path / "two"))  # the same photos and labels built again: other person ids
    with session_scope(a.sql_url) as s1, session_scope(b.sql_url) as s2:
        assert {p.name for p in s1.scalars(select(Person))} == {p.name for p in s2.scalars(select(Person))}
        assert not {p.person_id for p in s1.scalars(select(Person))} & {p.person_id for p in s2.scalars(select(Person))}

    out_a, out_b = heads.train_and_gate(a), heads.train_and_gate(b)

    wa, meta_a = load_checkpoint(out_a.checkpoint)
    wb, meta_b = load_checkpoint(out_b.checkpoint)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert (out_a.raw_metrics, out_a.projected_metrics, out_a.thresholds) == (out_b.raw_metrics, out_b.projected_metrics, out_b.thresholds)
    assert (out_a.promoted, out_a.reasons, out_a.losses) == (out_b.promoted, out_b.reasons, out_b.losses)
    for key in ("validation", "thresholds", "people", "faces", "final_loss", "losses", "gate_reasons", "config"):
        assert meta_a[key] == meta_b[key], key

    assert out_a.status in (TrainingStatus.TRAINED, TrainingStatus.REFUSED)
    # The comparison can fail: another seed on the same labels gives other weights.
    other = heads.train_and_gate(a, config=heads.train_config(a, seed=1))
    wc, _ = load_checkpoint(other.checkpoint)
    assert other.version == 2 and not torch.equal(wa["fc1.weight"], wc["fc1.weight"])


# ------------------------------------------------------------------------------------------------- gate ----
def test_gate_refuses_a_worse_head_but_keeps_its_checkpoint(lib_settings):
    settings = lib_settings
    # Raw space is perfect on these people; the old whole-space head squeezed to 2 output dimensions cannot keep
    # 10 people apart (they share one circle), so it is worse or at best no better by construction.
    out = heads.train_and_gate(settings, config=heads.train_config(settings, architecture="mlp", out_dim=2, hidden=16))

    assert out.raw_metrics["precision"] >= 0.99 and out.raw_metrics["recall"] >= 0.99  # raw near-perfect
    assert out.status is TrainingStatus.REFUSED and out.promoted is False
    assert out.reasons and out.reasons[0].startswith("refused")
    assert out.failing and all(r in out.reasons for r in out.failing)
    assert out.used_for.startswith("nothing")
    assert heads_in_sql(settings) == [(1, False, False)]

    pt, sidecar = Path(out.checkpoint), Path(out.sidecar)
    assert pt.is_file() and sidecar.is_file() and pt.name == "face_projection_w600k_mbf_v1.pt"
    meta = json.loads(sidecar.read_text())
    for key in SIDECAR_FIELDS:
        assert key in meta, key
    assert (meta["people"], meta["faces"]) == (out.people, out.faces) and meta["people"] >= 2
    assert meta["epochs"] == settings.training_epochs == len(meta["losses"])
    assert meta["final_loss"] == pytest.approx(out.losses[-1])
    assert set(meta["validation"]) == {"raw", "projected"} and meta["validation"]["raw"]["precision"] == out.raw_metrics["precision"]
    assert meta["embedding_model"] == settings.model_name
    assert meta["promoted"] is False and meta["gate_reasons"] == out.reasons and meta["status"] == "refused"
    assert meta["created_at"]

    with open_vector_client(settings) as client:
        rep = heads.reembed_faces(settings, FaceVectorStore(client, settings.qdrant_collection))
        assert rep.version is None and rep.collection is None and rep.skipped and "promoted" in rep.skipped
        assert not proj_store(client).exists()
        assert proj_store(client).collections_with_prefix("faces_proj") == []
    with pytest.raises(heads.NoPromotedHead):
        heads.live_projector(settings)
    assert heads.live_named_head(settings) is None


def test_only_human_labels_train_the_head_never_faces_automation_named(lib_settings):
    settings = lib_settings
    rep = organize.supervised_assignment(settings)  # automation names the other faces of the labelled people
    assert rep.newly_assigned == PEOPLE * (FACES - LABELLED)
    with session_scope(settings.sql_url) as s:
        human = set(s.scalars(select(FaceInstance.face_id).where(FaceInstance.assignment_source.in_(("manual", "cluster")))))
        auto = set(s.scalars(select(FaceInstance.face_id).where(FaceInstance.assignment_source == "auto")))
    assert len(human) == PEOPLE * LABELLED and len(auto) == PEOPLE * (FACES - LABELLED)

    face_ids, X, people, _photos = heads.labelled_faces(settings)
    assert set(face_ids) == human and not set(face_ids) & auto
    out = heads.train_and_gate(settings)
    split = out.raw_metrics
    # every face the gate used (trained on, tested, held out as a stranger) is a human label
    assert split["fit_faces"] + split["known_faces"] + split["strangers"] == len(human)
    assert out.faces == split["fit_faces"]
    # a human confirming an automatic name makes it a label: then (and only then) it counts
    labels.label_face(settings, sorted(auto)[0], "Person 0")
    assert len(heads.labelled_faces(settings)[0]) == len(human) + 1


def test_the_named_person_hook_keeps_the_raw_floor(lib_settings):
    settings = lib_settings
    v1 = heads.train_and_gate(settings)
    mark_promoted(settings, v1.version)
    hook = heads.live_named_head(settings)
    assert hook is not None and hook.version == v1.version
    assert (hook.raw_bar, hook.raw_floor) == (settings.person_match_threshold, settings.training_raw_floor)
    face_ids, X, people, _ = heads.labelled_faces(settings)
    order = sorted(set(people))
    owner = [order.index(p) for p in people]
    _, Xall = __import__("face_pipeline.core.embedding_files", fromlist=["load_embeddings"]).load_embeddings(settings)
    scores = heads.named_person_scores(hook, Xall, X, owner, len(order))
    assert scores.shape == (len(Xall), len(order)) and np.isfinite(scores).all()
    from face_pipeline.core.train import centroid_scores

    raw = centroid_scores(Xall, X, owner, len(order))
    who, _ = hook.name(raw, scores)
    named = np.flatnonzero(who >= 0)
    assert len(named) and (raw[named, who[named]] >= hook.raw_floor).all()
    np.testing.assert_array_equal(hook.project(Xall[:3]), project(load_checkpoint(v1.checkpoint)[0], Xall[:3]))


def test_a_promoted_head_decides_only_among_named_people(lib_settings):
    """Naming rule 8 through the product's organise: with the head, every automatic name still clears the model's
    impostor bar in raw space against that person's own labels, human labels stay, and a stranger who resembles
    nobody (added after training) is named by no head."""
    from face_pipeline.core import assign as assign_mod
    from face_pipeline.core import naming
    from face_pipeline.core.embedding_files import load_embeddings
    from face_pipeline_tests.core.test_organize import Library as Lib

    settings = lib_settings
    v1 = heads.train_and_gate(settings)
    mark_promoted(settings, v1.version)
    hook = heads.live_named_head(settings)
    lib = Lib(settings=settings, space=Space(seed=99))
    strangers = lib.add_batch("b2", photos_of(lib.space, "stranger_", "stranger", 4, stranger=0.8))
    before = {f.face_id: (f.person_id, f.assignment_source) for f in _faces(settings) if f.assignment_source == "manual"}

    rep = organize.supervised_assignment(settings, head=hook)
    faces = {f.face_id: f for f in _faces(settings)}
    assert {fid: (faces[fid].person_id, faces[fid].assignment_source) for fid in before} == before
    assert all(faces[f].person_id is None for f in strangers)
    ids, X = load_embeddings(settings)
    row = {f: i for i, f in enumerate(ids)}
    human = [(row[f], faces[f].person_id) for f in before]
    protos = assign_mod.build_prototypes(X[[i for i, _ in human]], [p for _, p in human])
    bar = naming.bars_for(settings.model_name).impostor
    auto = [f for f in faces.values() if f.assignment_source == "auto"]
    assert rep.assigned == len(auto) > 0
    S = assign_mod.person_scores(protos, X[[row[f.face_id] for f in auto]], settings.person_strategy)
    for f, scores in zip(auto, S):
        assert scores[protos.person_ids.index(f.person_id)] >= bar - 1e-6, f.face_id


def _faces(settings: Settings) -> list[FaceInstance]:
    with session_scope(settings.sql_url) as s:
        return list(s.scalars(select(FaceInstance)))


def test_live_projector_without_any_head(lib_settings):
    with pytest.raises(heads.NoPromotedHead, match="train"):
        heads.live_projector(lib_settings)


# ------------------------------------------------------------------------------------------------ switch ----
def test_reembed_builds_beside_and_switches_the_alias_atomically(lib_settings, monkeypatch):
    settings = lib_settings
    n_faces = PEOPLE * FACES
    v1 = heads.train_and_gate(settings)
    mark_promoted(settings, v1.version)

    with open_vector_client(settings) as client:
        raw = FaceVectorStore(client, settings.qdrant_collection)
        proj = proj_store(client)
        seen: list[dict] = []
        real_switch = FaceVectorStore.switch_alias
        real_delete = client.delete_collection

        def spy_switch(self, collection):
            # Right before the switch: the alias (if any) still serves a complete collection and the new one is
            # already complete.
            seen.append({"at": "switch", "new": collection, "new_count": int(client.count(collection, exact=True).count),
                         "live": self._alias_target(self.alias),
                         "live_count": proj.count() if proj.exists() else None})
            return real_switch(self, collection)

        def spy_delete(name, *args, **kwargs):
            seen.append({"at": "delete", "name": name, "live": proj.collection if proj.exists() else None})
            return real_delete(name, *args, **kwargs)

        monkeypatch.setattr(FaceVectorStore, "switch_alias", spy_switch)
        monkeypatch.setattr(client, "delete_collection", spy_delete)

        # --- v1: built beside (nothing live yet), alias created
        rep = heads.reembed_faces(settings, raw)
        assert (rep.version, rep.collection, rep.faces, rep.previous, rep.removed, rep.skipped) == (1, "faces_proj_v1", n_faces, None, [], None)
        assert seen == [{"at": "switch", "new": "faces_proj_v1", "new_count": n_faces, "live": None, "live_count": None}]
        assert proj.collection == "faces_proj_v1" and proj.count() == raw.count() == n_faces
        assert heads_in_sql(settings) == [(1, True, True)]

        from face_pipeline.core.sync import sync_payloads

        sync_payloads(settings, raw)  # labels write SQL only; the run pushes their payloads to every space
        ids, Z, payloads = proj.load_all()
        raw_ids, X, raw_payloads = raw.load_all()
        assert ids == raw_ids and Z.shape == (n_faces, 512)
        assert np.allclose(np.linalg.norm(Z, axis=1), 1.0, atol=1e-5)
        state, _ = load_checkpoint(v1.checkpoint)
        assert np.allclose(Z, project(state, X), atol=1e-5)  # really this head's projection of each face
        for p, r in zip(payloads, raw_payloads):
            assert set(p) == set(r) == set(PAYLOAD_FIELDS)
            assert {k: p[k] for k in PAYLOAD_FIELDS if k != "indexed_at"} == {k: r[k] for k in PAYLOAD_FIELDS if k != "indexed_at"}
        assert sum(p["person_id"] is not None for p in payloads) == PEOPLE * LABELLED
        hit = proj.search(Z[5], limit=3)
        assert hit[0][0] == ids[5] and hit[0][1] == pytest.approx(1.0, abs=1e-4)

        fn, space, thresholds = heads.live_projector(settings)
        assert space == "proj_v1" and set(thresholds) == {"assign", "cluster", "floor"}
        assert np.allclose(fn(X[:4]), Z[:4], atol=1e-5)

        # --- v2: built beside v1 while v1 serves, one alias operation, then v1 is dropped
        seen.clear()
        v2 = heads.train_and_gate(settings, config=heads.train_config(settings, seed=7))
        mark_promoted(settings, v2.version)
        assert proj.count() == n_faces and proj.collection == "faces_proj_v1"  # training did not touch the live one
        rep = heads.reembed_faces(settings, raw)
        assert (rep.version, rep.collection, rep.previous, rep.removed) == (2, "faces_proj_v2", "faces_proj_v1", ["faces_proj_v1"])
        assert seen == [
            {"at": "switch", "new": "faces_proj_v2", "new_count": n_faces, "live": "faces_proj_v1", "live_count": n_faces},
            {"at": "delete", "name": "faces_proj_v1", "live": "faces_proj_v2"},  # deleted only after the switch
        ]
        assert proj.collection == "faces_proj_v2" and proj.count() == n_faces
        assert proj.collections_with_prefix("faces_proj_v") == ["faces_proj_v2"]
        assert heads_in_sql(settings) == [(1, True, False), (2, True, True)]
        ids2, Z2, _ = proj.load_all()
        assert ids2 == ids and not np.allclose(Z2, Z)  # the other head's vectors
        assert heads.live_projector(settings)[1] == "proj_v2"

        # --- new photos, same live head (e.g. the next retrain was refused): refreshed in place, never dropped
        seen.clear()
        lib = Library(settings=settings, space=Space(seed=99), store=raw)
        new = lib.add_batch("b2", photos_of(lib.space, "late_", "late", 2))
        rep = heads.reembed_faces(settings, raw)
        assert (rep.version, rep.collection, rep.faces) == (2, "faces_proj_v2", n_faces + 2)
        assert [e for e in seen if e.get("name") == "faces_proj_v2" or e.get("new") == "faces_proj_v2"] == []
        assert proj.collection == "faces_proj_v2" and proj.count() == n_faces + 2
        assert set(proj.vectors_for(new)) == set(new)
        assert heads_in_sql(settings) == [(1, True, False), (2, True, True)]

        # Assignments change after the switch: the payload sync reaches the projected space through its alias.
        assert organize.supervised_assignment(settings).newly_assigned == PEOPLE * (FACES - LABELLED)
        assert sync.sync_payloads(settings, raw) >= PEOPLE * (FACES - LABELLED)
        for store in (raw, proj):
            d = consistency.vector_store_disagreements(settings, store)
            assert d.agree and d.sql_faces == d.qdrant_points == n_faces + 2 and d.pending_sync == 0, d.as_metadata()


# ---------------------------------------------------------------------------------------------- retrain ----
def test_labels_changed_since_training_flips_on_human_events_only(lib_settings):
    settings = lib_settings
    assert heads.labels_changed_since_training(settings) is True  # labels and no head yet

    heads.train_and_gate(settings)
    assert heads.labels_changed_since_training(settings) is False

    rep = organize.supervised_assignment(settings)  # automation writes events too (actor "pipeline")
    assert rep.newly_assigned == PEOPLE * (FACES - LABELLED)
    assert heads.labels_changed_since_training(settings) is False

    with session_scope(settings.sql_url) as s:
        auto = s.scalars(select(FaceInstance.face_id).where(FaceInstance.assignment_source == "auto").order_by(FaceInstance.face_id)).first()
    labels.label_face(settings, auto, "Person 3")  # a human confirms/corrects one face
    assert heads.labels_changed_since_training(settings) is True

    out = heads.train_and_gate(settings)
    assert out.version == 2
    assert heads.labels_changed_since_training(settings) is False
