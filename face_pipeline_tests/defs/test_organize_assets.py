"""supervised_assignments → unknown_clusters and their checks, materialised by a real Dagster test instance on a
real library: six faces_dev people × four photos, ingested once (real models) and copied into a fresh home per test.

The library helpers at the top (``shared_library``, ``library_home``, …) are reused by the training and
schedule/sensor tests, so the photos are detected and embedded once per test session.
"""

from __future__ import annotations

import base64
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select, update

from face_pipeline.core import labels
from face_pipeline.core.consistency import vector_store_disagreements
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import SOURCE_AUTO, SOURCE_MANUAL, FaceInstance, Person, Photo
from face_pipeline.core.ingest import register_batch
from face_pipeline.core.vectors import FaceVectorStore, open_vector_client
from face_pipeline.defs.organize.assets import (
    no_person_twice_in_a_photo,
    sql_and_qdrant_agree,
    supervised_assignments,
    unknown_clusters,
)
from face_pipeline.defs.ingest.assets import face_detections, face_embeddings
from face_pipeline.defs.ingest.partitions import photo_batches
from face_pipeline.defs.resources import FacePipelineResource
from face_pipeline.home import prepare_home
from face_pipeline.settings import Settings
from face_pipeline_tests.conftest import _clear_face_env, copy_photos, lfw_people, run_ingest

LIBRARY_BATCH = "library"
PEOPLE, IN_LIBRARY, EXTRA = 6, 4, 2  # photos 1-4 of each person are ingested; 5-6 are kept for a later batch


# --------------------------------------------------------------------------------------------------------------
# The shared library (also imported by test_training_assets and test_schedules_and_label_sensor)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Library:
    home: Path  # template home: never used directly, copied per test (library_home)
    names: list[str]  # the six people, in order
    faces: dict[str, list[str]]  # person → face ids of their (centre) face in photos 1-4, photo order
    truth: dict[str, str]  # face id → person, for those faces; background faces are nobody's
    extra_photos: dict[str, list[Path]] = field(default_factory=dict)  # person → photos 5-6 (not ingested)


_LIBRARY: dict[str, Library] = {}


def _image_ids(settings: Settings, batch: str) -> set[str]:
    with session_scope(settings.sql_url) as s:
        return set(s.scalars(select(Photo.image_id).where(Photo.batch == batch, Photo.image_id.is_not(None))))


def _centre_faces(settings: Settings) -> dict[str, str]:
    """photo path → face id of the face closest to the photo's centre (faces_dev: the labelled person)."""
    best: dict[str, tuple[float, str]] = {}
    with session_scope(settings.sql_url) as s:
        rows = s.execute(
            select(Photo.path, Photo.width, Photo.height, FaceInstance.face_id, FaceInstance.x1, FaceInstance.y1,
                   FaceInstance.x2, FaceInstance.y2).join(FaceInstance, FaceInstance.image_id == Photo.image_id)
        ).all()
    for path, w, h, fid, x1, y1, x2, y2 in rows:
        d = ((x1 + x2) / 2 - w / 2) ** 2 + ((y1 + y2) / 2 - h / 2) ** 2
        if path not in best or d < best[path][0]:
            best[path] = (d, fid)
    return {path: fid for path, (_, fid) in best.items()}


def shared_library(tmp_path_factory: pytest.TempPathFactory, faces_dev, models) -> Library:
    """Ingest the six people's first four photos once per session (core.ingest, the assets' own code)."""
    if "lib" in _LIBRARY:
        return _LIBRARY["lib"]
    people = lfw_people(faces_dev, n=PEOPLE, per_person=IN_LIBRARY + EXTRA)
    root = tmp_path_factory.mktemp("shared_library")
    photos = root / "photos" / LIBRARY_BATCH
    copied = {name: copy_photos(paths[:IN_LIBRARY], photos) for name, paths in people.items()}
    settings = Settings(home=root / "home")
    with pytest.MonkeyPatch.context() as mp:
        _clear_face_env(mp)
        prepare_home(settings, set_dagster_home=False)
        det, emb = run_ingest(settings, models, LIBRARY_BATCH, photos)
    assert det.photos == PEOPLE * IN_LIBRARY and det.failed == 0 and emb.faces == det.faces >= PEOPLE * IN_LIBRARY
    centre = _centre_faces(settings)
    faces = {name: [centre[str(p)] for p in paths] for name, paths in copied.items()}
    truth = {fid: name for name, fids in faces.items() for fid in fids}
    assert len(truth) == PEOPLE * IN_LIBRARY
    lib = Library(settings.home_dir, list(people), faces, truth, {n: ps[IN_LIBRARY:] for n, ps in people.items()})
    _LIBRARY["lib"] = lib
    return lib


def library_home(lib: Library, dest: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A private, writable copy of the library's home (its Qdrant folder is opened by one client per path)."""
    _clear_face_env(monkeypatch)
    home = dest / "home"
    shutil.copytree(lib.home, home)
    shutil.rmtree(home / "dagster_home", ignore_errors=True)
    monkeypatch.setenv("FACE_PIPELINE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))  # never the developer's instance
    settings = Settings(home=home)
    prepare_home(settings, set_dagster_home=False)
    return settings


def resources(settings: Settings) -> dict:
    return {"face_pipeline": FacePipelineResource(home=str(settings.home_dir))}


def label(settings: Settings, lib: Library, per_person: int, people: list[str], actor: str = "test") -> None:
    """Label the first ``per_person`` faces of each of ``people`` with their true name (manual labels)."""
    for name in people:
        for fid in lib.faces[name][:per_person]:
            labels.label_face(settings, fid, name, actor=actor)


def face_state(settings: Settings) -> dict[str, tuple[str | None, str | None, str | None]]:
    """face id → (person name, assignment source, cluster id)."""
    with session_scope(settings.sql_url) as s:
        names = dict(s.execute(select(Person.person_id, Person.name)).all())
        return {f.face_id: (names.get(f.person_id), f.assignment_source, f.cluster_id) for f in s.scalars(select(FaceInstance))}


def metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    mats = result.asset_materializations_for_node(node)
    assert len(mats) == 1, f"{node}: {len(mats)} materialisations"
    return {k: v.value for k, v in mats[0].metadata.items()}


def check_verdicts(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


# --------------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lib(tmp_path_factory, faces_dev, models) -> Library:
    return shared_library(tmp_path_factory, faces_dev, models)


@pytest.fixture
def settings(lib, fast_tmp, monkeypatch) -> Settings:
    return library_home(lib, fast_tmp, monkeypatch)


def organize(instance, settings: Settings, run_config: dict | None = None, raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [supervised_assignments, unknown_clusters, no_person_twice_in_a_photo, sql_and_qdrant_agree],
        instance=instance, resources=resources(settings), run_config=run_config, raise_on_error=raise_on_error,
    )


def _config(**cfg) -> dict:
    return {"ops": {"supervised_assignments": {"config": cfg}, "unknown_clusters": {"config": cfg}}}


# --------------------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------------------


def test_organize_assigns_known_people_clusters_the_rest_and_passes_its_checks(lib, settings, dagster_instance):
    known, unknown = lib.names[:3], lib.names[3:]
    label(settings, lib, 2, known)

    result = organize(dagster_instance, settings)
    assert result.success

    sa = metadata(result, "supervised_assignments")
    state = face_state(settings)
    auto = {fid for fid, (_, src, _) in state.items() if src == SOURCE_AUTO}
    assert sa["persons"] == 3 and sa["human_labelled"] == 6 and sa["faces"] == len(state)
    assert sa["auto_assigned"] == len(auto) == sa["newly_assigned"]
    assert sa["threshold"] == pytest.approx(settings.person_match_threshold) and sa["space"] == "raw"
    # the two unlabelled photos of each known person went to that person, and nothing went to a wrong one
    for name in known:
        for fid in lib.faces[name][2:]:
            assert state[fid][:2] == (name, SOURCE_AUTO), (name, fid, state[fid])
    assert all(state[f][0] == lib.truth.get(f) for f in auto), "an automatic assignment to the wrong person"

    uc = metadata(result, "unknown_clusters")
    unknown_faces = [f for f, (p, _, _) in state.items() if p is None]
    assert uc["method"] == settings.unknown_method and uc["unknown_faces"] == len(unknown_faces)
    assert uc["clusters"] == 3 and uc["clustered_faces"] == 12 and uc["noise_faces"] == len(unknown_faces) - 12
    assert uc["cluster_ids_new"] == 3 and uc["largest_cluster"] == 4
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in uc["size_histogram"].splitlines()[2:]]
    assert rows == [["2", "0"], ["3-5", "3"], ["6-10", "0"], ["11-50", "0"], ["51+", "0"]]  # bins in order, integer counts
    assert all(isinstance(v, int) for k, v in uc.items() if k in ("clusters", "clustered_faces", "noise_faces", "unknown_faces"))
    plot = uc["size_plot"]
    assert plot.startswith("![cluster sizes](data:image/png;base64,")
    assert base64.b64decode(plot.split("base64,", 1)[1].rstrip(")")).startswith(b"\x89PNG")
    # each unknown person is exactly one stable cluster
    clusters = {name: {state[f][2] for f in lib.faces[name]} for name in unknown}
    assert all(len(c) == 1 and next(iter(c)).startswith("unknown_cluster_") for c in clusters.values()), clusters
    assert len({next(iter(c)) for c in clusters.values()}) == 3

    verdicts = check_verdicts(result)
    assert set(verdicts) == {"no_person_twice_in_a_photo", "sql_and_qdrant_agree"}
    assert all(v.passed for v in verdicts.values()), {k: v.metadata for k, v in verdicts.items()}
    agree = {k: v.value for k, v in verdicts["sql_and_qdrant_agree"].metadata.items()}
    assert agree["qdrant_points"] == agree["sql_embedded_faces"] == len(state) and agree["pending_payload_sync"] == 0

    # the instance recorded both materialisations and both check results of this run
    for asset in (supervised_assignments, unknown_clusters):
        assert dagster_instance.get_latest_materialization_event(asset.key).run_id == result.run_id
    for check in (no_person_twice_in_a_photo, sql_and_qdrant_agree):
        (key,) = check.check_keys
        record = dagster_instance.get_latest_asset_check_evaluation_record(key)
        assert record.run_id == result.run_id and record.status.value == "SUCCEEDED"

    # the automatic assignments reached the Qdrant payload
    with open_vector_client(settings) as client:
        payload = {r.face_id: r.payload.get("person_id") for r in FaceVectorStore(client, settings.qdrant_collection).iter_records(with_vectors=False)}
    with session_scope(settings.sql_url) as s:
        sql = dict(s.execute(select(FaceInstance.face_id, FaceInstance.person_id)).all())
    assert payload == sql and sum(p is not None for p in payload.values()) == 6 + len(auto)

    # a second run keeps the cluster ids and changes nothing
    again = organize(dagster_instance, settings)
    assert metadata(again, "unknown_clusters")["cluster_ids_kept"] == 3
    assert metadata(again, "supervised_assignments")["newly_assigned"] == 0
    assert face_state(settings) == state


def test_checks_fail_when_the_library_is_inconsistent(lib, settings, dagster_instance):
    assert all(v.passed for v in check_verdicts(organize(dagster_instance, settings)).values())

    # a point lost from Qdrant: the (non-blocking) agreement check fails, and says which face
    victim = lib.faces[lib.names[0]][0]
    with open_vector_client(settings) as client:
        store = FaceVectorStore(client, settings.qdrant_collection)
        before = store.count()
        store.delete([victim])
        assert store.count() == before - 1
    result = organize(dagster_instance, settings, raise_on_error=False)
    assert result.success  # a failed non-blocking check does not fail the run
    verdicts = check_verdicts(result)
    assert verdicts["no_person_twice_in_a_photo"].passed
    agree = verdicts["sql_and_qdrant_agree"]
    assert not agree.passed
    meta = {k: v.value for k, v in agree.metadata.items()}
    assert meta["missing_in_qdrant"] == 1 and meta["extra_in_qdrant"] == 0 and victim in meta["examples"]
    (key,) = sql_and_qdrant_agree.check_keys
    assert dagster_instance.get_latest_asset_check_evaluation_record(key).status.value == "FAILED"

    # one person on two faces of one photo, written behind the label API's back: the blocking check fails the
    # run and unknown_clusters is not materialised
    with session_scope(settings.sql_url) as s:
        image_id = s.scalars(select(FaceInstance.image_id).group_by(FaceInstance.image_id)
                             .having(func.count() > 1).order_by(FaceInstance.image_id)).first()
        two = list(s.scalars(select(FaceInstance.face_id).where(FaceInstance.image_id == image_id).order_by(FaceInstance.face_id)))[:2]
    labels.label_face(settings, two[0], "Twice", actor="test")
    with session_scope(settings.sql_url) as s:
        pid = s.scalar(select(Person.person_id).where(Person.name == "Twice"))
        s.execute(update(FaceInstance).where(FaceInstance.face_id == two[1])
                  .values(person_id=pid, cluster_id=pid, assignment_source=SOURCE_MANUAL, payload_dirty=True))
    blocked = organize(dagster_instance, settings, raise_on_error=False)
    assert not blocked.success
    verdicts = check_verdicts(blocked)
    twice = verdicts["no_person_twice_in_a_photo"]
    assert not twice.passed and twice.metadata["conflicts"].value == 1
    assert [image_id, pid, 2] in twice.metadata["examples"].value
    assert len(blocked.asset_materializations_for_node("supervised_assignments")) == 1
    assert blocked.asset_materializations_for_node("unknown_clusters") == []
    assert "sql_and_qdrant_agree" not in verdicts  # its asset never ran


def test_run_config_overrides_take_effect(lib, settings, dagster_instance):
    label(settings, lib, 2, lib.names[:3])
    default = organize(dagster_instance, settings)
    base_sa, base_uc = metadata(default, "supervised_assignments"), metadata(default, "unknown_clusters")
    assert base_uc["method"] == settings.unknown_method != "hdbscan"
    before = face_state(settings)

    # a threshold every face clears: faces of unknown people get some known person's name, except where that
    # person already holds a face of the same photo, or the library's structure holds them back (a group of their
    # own at both links, or one shared by two named people: naming rule 5 reads no threshold)
    loose = organize(dagster_instance, settings, run_config=_config(person_threshold=-1.0, unknown_method="hdbscan"))
    assert loose.success
    sa, uc = metadata(loose, "supervised_assignments"), metadata(loose, "unknown_clusters")
    assert sa["threshold"] == -1.0 and base_sa["threshold"] == pytest.approx(settings.person_match_threshold)
    assert sa["auto_assigned"] > base_sa["auto_assigned"]
    assert uc["method"] == "hdbscan" and uc["unknown_faces"] < base_uc["unknown_faces"]
    state = face_state(settings)
    loosely = [f for f, st in state.items() if st[0] is not None and before[f][0] is None]
    assert loosely  # the loose bar took effect: faces the default bar left unnamed were named
    assert check_verdicts(loose)["no_person_twice_in_a_photo"].passed  # the same-photo rule held under pressure

    # the config goes back to the settings when not given again: the faces return to their right places
    assert organize(dagster_instance, settings).success
    back = face_state(settings)
    assert all(back[f][0] is None for f in loosely)
    for name in lib.names[3:]:
        assert all(back[f][0] is None for f in lib.faces[name])

    # an unknown method fails the run instead of silently falling back
    bad = organize(dagster_instance, settings, run_config=_config(unknown_method="kmeans"), raise_on_error=False)
    assert not bad.success
    assert bad.asset_materializations_for_node("unknown_clusters") == []


def test_a_new_batch_is_organised_by_its_own_run_requested_when_ingest_succeeds(lib, settings, dagster_instance, tmp_path):
    from face_pipeline.defs.ingest.incremental import new_faces_organized
    from face_pipeline.defs.automation.sensors import organize_after_ingest

    known, unknown = lib.names[:3], lib.names[3:]
    label(settings, lib, 2, known)
    assert organize(dagster_instance, settings).success
    cluster_of = {name: face_state(settings)[lib.faces[name][0]][2] for name in unknown}

    batch = "later_photos"
    folder = tmp_path / batch
    new_photos = {name: copy_photos(lib.extra_photos[name], folder) for name in lib.names}
    register_batch(settings, batch, folder)
    dagster_instance.add_dynamic_partitions(photo_batches.name, [batch])
    result = dg.materialize([face_detections, face_embeddings], partition_key=batch, instance=dagster_instance,
                            resources=resources(settings), tags={"dagster/partition": batch})
    assert result.success
    emb = metadata(result, "face_embeddings")
    assert emb["faces"] == metadata(result, "face_detections")["faces"] >= 2 * PEOPLE
    assert "assigned_to_known_people" not in emb  # the ingest run no longer touches library-wide state
    assert all(face_state(settings)[f][:2] == (None, None) for f in face_state(settings) if f.startswith(tuple(
        _image_ids(settings, batch))))

    # the ingest run's success asks for a small organise run of that batch
    ctx = dg.build_run_status_sensor_context(sensor_name="organize_after_ingest", dagster_instance=dagster_instance,
                                             dagster_run=result.dagster_run, dagster_event=result.get_run_success_event())
    request = organize_after_ingest(ctx)
    assert isinstance(request, dg.RunRequest) and request.partition_key == batch
    follow = dg.materialize([new_faces_organized], partition_key=batch, instance=dagster_instance, resources=resources(settings),
                            tags=request.tags)
    assert follow.success
    inc = metadata(follow, "new_faces_organized")
    assert inc["new_faces"] == emb["faces"]
    assert inc["assigned_to_known_people"] >= 2 * len(known)
    assert inc["joined_unknown_clusters"] >= 1
    assert inc["assigned_to_known_people"] + inc["joined_unknown_clusters"] + inc["still_unknown"] == emb["faces"]

    state = face_state(settings)
    centre = _centre_faces(settings)
    for name in known:  # every new photo of a known person: their face is theirs already, automatically
        for p in new_photos[name]:
            assert state[centre[str(p)]][:2] == (name, SOURCE_AUTO), (name, p.name, state[centre[str(p)]])
    joined = sum(state[centre[str(p)]][2] == cluster_of[name] for name in unknown for p in new_photos[name])
    assert joined >= 1
    for name in unknown:  # nobody's face was put into another person's cluster or onto a person
        for p in new_photos[name]:
            person, _, cluster = state[centre[str(p)]]
            assert person is None and cluster in (cluster_of[name], f"unknown_noise_{centre[str(p)]}"), (name, cluster)

    # the new assignments are in the Qdrant payload too (new_faces_organized syncs at its end)
    with open_vector_client(settings) as client:
        report = vector_store_disagreements(settings, FaceVectorStore(client, settings.qdrant_collection))
    assert report.agree and report.pending_sync == 0 and report.qdrant_points == len(state)
