"""The suggestion queue (core.suggestions) on a real home: faces_dev photos detected and embedded by the real
models, clustered by the real organise step, people named through the real label operations; suggestions stored
the way organise stores them (``replace_pipeline_suggestions`` inside a SQL session), then listed and answered.

The main flow runs on SQLite and, when reachable, on PostgreSQL (the home's rows copied into a fresh database).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from face_pipeline.core import labels, organize
from face_pipeline.core import suggestions as sg
from face_pipeline.core.db import get_engine, session_scope, upgrade
from face_pipeline.core.db.schema import (
    Base,
    FaceAssignmentEvent,
    FaceInstance,
    FacePairConstraint,
    FaceRejection,
    Person,
    SuggestionFace,
    SuggestionRecord,
)
from face_pipeline.core.errors import Conflict, InvalidInput, NotFound
from face_pipeline.core.suggestions import Suggestion
from face_pipeline.home import prepare_home
from face_pipeline.settings import Settings
from face_pipeline_tests.conftest import _clear_face_env, copy_photos, lfw_people, run_ingest
from face_pipeline_tests.defs.test_organize_assets import _centre_faces

PEOPLE, PHOTOS = 4, 3
BATCH = "suggest"


@dataclass
class Template:
    """A home ingested once per session: ``faces[person]`` are the faces_dev subjects' face ids (photo order);
    person 0 is named "Alice" on photos 0-1, person 1 "Bob" on photo 0; persons 2 and 3 are unnamed."""

    home: Path
    faces: list[list[str]]
    alice: str
    bob: str


_TEMPLATE: dict[str, Template] = {}


def template(tmp_path_factory: pytest.TempPathFactory, faces_dev, models) -> Template:
    if "t" in _TEMPLATE:
        return _TEMPLATE["t"]
    people = lfw_people(faces_dev, n=PEOPLE, per_person=PHOTOS)
    root = tmp_path_factory.mktemp("suggestions_template")
    photos = root / "photos"
    copied = [copy_photos(paths, photos) for paths in people.values()]
    settings = Settings(home=root / "home", database_url=None, qdrant_url=None)
    with pytest.MonkeyPatch.context() as mp:
        _clear_face_env(mp)
        prepare_home(settings, set_dagster_home=False)
        det, emb = run_ingest(settings, models, BATCH, photos)
        assert det.failed == 0 and emb.faces == det.faces >= PEOPLE * PHOTOS
        centre = _centre_faces(settings)
        faces = [[centre[str(p)] for p in paths] for paths in copied]
        alice = labels.label_face(settings, faces[0][0], "Alice", actor="setup").person_id
        labels.label_face(settings, faces[0][1], alice, actor="setup")
        bob = labels.label_face(settings, faces[1][0], "Bob", actor="setup").person_id
        organize.cluster_unknown(settings)
    get_engine(settings.sql_url).dispose()
    _TEMPLATE["t"] = Template(settings.home_dir, faces, alice, bob)
    return _TEMPLATE["t"]


def copy_sql(src_url: str, dst_url: str) -> None:
    """Every row of every table, from one database into a freshly migrated one (same schema on both)."""
    upgrade(dst_url)
    with get_engine(src_url).connect() as src, get_engine(dst_url).begin() as dst:
        for table in Base.metadata.sorted_tables:
            rows = [dict(r) for r in src.execute(select(table)).mappings()]
            if rows:
                dst.execute(insert(table), rows)
        if dst.dialect.name == "postgresql":  # rows came with their ids: move the sequences past them
            for table in Base.metadata.sorted_tables:
                for col in table.primary_key.columns:
                    if col.autoincrement is True or (col.autoincrement == "auto" and col.type.python_type is int and len(table.primary_key.columns) == 1):
                        dst.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', '{col.name}'), "
                                            f"COALESCE((SELECT MAX({col.name}) FROM {table.name}), 0) + 1, false)")


def home_from_template(t: Template, dest: Path, monkeypatch: pytest.MonkeyPatch, database_url: str | None = None) -> Settings:
    """A private copy of the template home (SQLite file, embeddings, Qdrant folder); with ``database_url`` its SQL
    rows are copied into that database, which the returned settings use."""
    _clear_face_env(monkeypatch)
    home = dest / "home"
    shutil.copytree(t.home, home)
    monkeypatch.setenv("FACE_PIPELINE_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster_home"))
    settings = Settings(home=home, database_url=None, qdrant_url=None)
    if database_url:
        copy_sql(settings.sql_url, database_url)
        settings = Settings(home=home, database_url=database_url, qdrant_url=None)
    prepare_home(settings, set_dagster_home=False)
    return settings


@pytest.fixture
def tpl(tmp_path_factory, faces_dev, models) -> Template:
    return template(tmp_path_factory, faces_dev, models)


@pytest.fixture
def settings(tpl, tmp_path, monkeypatch) -> Settings:
    return home_from_template(tpl, tmp_path, monkeypatch)


def cluster_of(settings: Settings, face_id: str) -> str | None:
    return face(settings, face_id).cluster_id


def face(settings: Settings, face_id: str) -> FaceInstance:
    with session_scope(settings.sql_url) as s:
        return s.get(FaceInstance, face_id)


def store(settings: Settings, suggestions: list[Suggestion]) -> int:
    """As organise does: inside its SQL session."""
    with session_scope(settings.sql_url) as s:
        return sg.replace_pipeline_suggestions(s, suggestions)


def events(settings: Settings, action: str) -> list[FaceAssignmentEvent]:
    with session_scope(settings.sql_url) as s:
        return list(s.scalars(select(FaceAssignmentEvent).where(FaceAssignmentEvent.action == action).order_by(FaceAssignmentEvent.id)))


def standard(t: Template) -> list[Suggestion]:
    """Is Alice's third photo Alice? Are Bob's other two faces Bob? Are person 2's first face and the rest one
    person? Are persons 3's faces person 2 (two unnamed groups)?"""
    f = t.faces
    return [
        Suggestion("face_is_person", (f[0][2],), person_id=t.alice, score=0.35, bar=0.40),
        Suggestion("cluster_is_person", tuple(f[1][1:]), person_id=t.bob, score=0.30, bar=0.40),
        Suggestion("same_person", (f[2][0],), other_face_ids=tuple(f[2][1:]), score=0.38, bar=0.40),
    ]


# --------------------------------------------------------------------------------------------------------------
# the main flow, on both backends
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def any_backend(request, tpl, tmp_path, monkeypatch) -> Settings:
    url = request.getfixturevalue("pg_database")()[1] if request.param == "postgresql" else None
    return home_from_template(tpl, tmp_path, monkeypatch, database_url=url)


def test_store_list_accept_reject(any_backend, tpl):
    settings, f = any_backend, tpl.faces
    assert store(settings, standard(tpl)) == 3
    assert sg.count_suggestions(settings) == 3

    listed = sg.list_suggestions(settings)
    # priority = faces settled × score / bar: the group pair (3 × 0.95), Bob's cluster (2 × 0.75), Alice's face (0.875)
    assert [s.kind for s in listed] == ["same_person", "cluster_is_person", "face_is_person"]
    assert [round(s.priority, 3) for s in listed] == [2.85, 1.5, 0.875]
    pair, bob_q, alice_q = listed
    assert alice_q.person.name == "Alice" and alice_q.person.cover_face_id in f[0][:2] and alice_q.person.faces == 2
    assert [x.face_id for x in alice_q.faces] == [f[0][2]] and alice_q.settles == 1 and alice_q.question == "Is this Alice?"
    assert all(x.photo_path and Path(x.photo_path).is_file() for s in listed for x in (*s.faces, *s.other_faces))
    assert bob_q.person.name == "Bob" and sorted(x.face_id for x in bob_q.faces) == sorted(f[1][1:])
    assert {pair.face_count, pair.other_face_count} == {1, 2} and pair.person is None
    assert sg.list_suggestions(settings, kind="face_is_person")[0].id == alice_q.id
    assert [s.id for s in sg.list_suggestions(settings, limit=1, offset=1)] == [bob_q.id]

    # yes to "is this Alice?": a manual label through label_face, with the actor in every event
    res = sg.accept_suggestion(settings, alice_q.id, actor="tester")
    assert res.person_id == tpl.alice and res.changed == [f[0][2]]
    got = face(settings, f[0][2])
    assert (got.person_id, got.assignment_source) == (tpl.alice, "manual")
    labelled = [e for e in events(settings, "label_face") if e.face_id == f[0][2]]
    assert [(e.actor, e.to_person, e.reason) for e in labelled] == [("tester", tpl.alice, f"suggestion {alice_q.id}")]
    answer = events(settings, "accept_suggestion")
    assert [(e.actor, e.details["suggestion_id"]) for e in answer] == [("tester", alice_q.id)]
    info = sg.get_suggestion(settings, alice_q.id)
    assert (info.status, info.actor) == ("accepted", "tester") and info.answered_at is not None
    with pytest.raises(Conflict):
        sg.accept_suggestion(settings, alice_q.id)
    with pytest.raises(Conflict):
        sg.reject_suggestion(settings, alice_q.id)

    # yes to "are these Bob?": both faces become Bob (human labels)
    res = sg.accept_suggestion(settings, bob_q.id, actor="tester")
    assert sorted(res.changed) == sorted(f[1][1:])
    for fid in f[1][1:]:
        got = face(settings, fid)
        assert got.person_id == tpl.bob and got.assignment_source in ("manual", "cluster")

    # no to "the same person?" between two unnamed groups: cannot-link pairs the clustering honours
    sg.reject_suggestion(settings, pair.id, actor="tester")
    with session_scope(settings.sql_url) as s:
        cannot = sg.cannot_link_pairs(s)
        assert sg.must_link_pairs(s) == []
    side_a, side_b = [x.face_id for x in pair.faces], [x.face_id for x in pair.other_faces]
    assert cannot == sorted(tuple(sorted((a, b))) for a in side_a for b in side_b)
    assert sg.count_suggestions(settings) == 0
    assert sg.count_suggestions(settings, status="accepted") == 2 and sg.count_suggestions(settings, status="rejected") == 1

    # organise runs again with the same questions: nothing is re-opened
    assert store(settings, standard(tpl)) == 0
    assert sg.count_suggestions(settings) == 0 and sg.count_suggestions(settings, status="all") == 3


# --------------------------------------------------------------------------------------------------------------
# storage rules
# --------------------------------------------------------------------------------------------------------------


def test_rejected_face_is_never_proposed_again(settings, tpl):
    f = tpl.faces
    q = Suggestion("face_is_person", (f[2][0],), person_id=tpl.alice, score=0.3, bar=0.4)
    store(settings, [q])
    sid = sg.list_suggestions(settings)[0].id
    res = sg.reject_suggestion(settings, sid, actor="tester")
    assert res.changed == [f[2][0]]
    with session_scope(settings.sql_url) as s:
        assert s.get(FaceRejection, (f[2][0], tpl.alice)) is not None
    assert face(settings, f[2][0]).person_id is None
    assert [e.actor for e in events(settings, "reject_face")] == ["tester"]
    assert [e.actor for e in events(settings, "reject_suggestion")] == ["tester"]

    # the same question again, and a bigger group holding that face: the face is never proposed as Alice again
    bigger = Suggestion("cluster_is_person", (f[2][0], f[2][1]), person_id=tpl.alice, score=0.3, bar=0.4)
    assert store(settings, [q, bigger]) == 1
    (only,) = sg.list_suggestions(settings)
    assert [x.face_id for x in only.faces] == [f[2][1]] and only.kind == "cluster_is_person"
    assert sg.get_suggestion(settings, sid).status == "rejected"
    # the rejection is kept even when no face_rejections row says so any more (the history alone decides)
    with session_scope(settings.sql_url) as s:
        s.query(FaceRejection).delete()
    assert store(settings, [q]) == 0


def test_replace_is_idempotent_keeps_ids_and_marks_superseded_stale(settings, tpl):
    first = standard(tpl)
    assert store(settings, first) == 3
    ids = {s.kind: s.id for s in sg.list_suggestions(settings)}
    with session_scope(settings.sql_url) as s:
        before = s.scalar(select(func.count()).select_from(SuggestionFace))
    assert store(settings, first) == 3  # same list again: same rows
    assert store(settings, list(reversed(first))) == 3
    assert {s.kind: s.id for s in sg.list_suggestions(settings)} == ids
    with session_scope(settings.sql_url) as s:
        assert s.scalar(select(func.count()).select_from(SuggestionRecord)) == 3
        assert s.scalar(select(func.count()).select_from(SuggestionFace)) == before

    # a new score for the same question updates it in place; a question no longer asked becomes stale
    rescored = [Suggestion("face_is_person", first[0].face_ids, person_id=tpl.alice, score=0.39, bar=0.40), first[1]]
    assert store(settings, rescored) == 2
    now = {s.kind: s for s in sg.list_suggestions(settings)}
    assert now["face_is_person"].id == ids["face_is_person"] and now["face_is_person"].score == pytest.approx(0.39)
    assert sg.get_suggestion(settings, ids["same_person"]).status == "stale"
    with pytest.raises(Conflict):
        sg.accept_suggestion(settings, ids["same_person"])
    # duplicates in one list are stored once; the same two groups given in the other order are the same question
    a, b = first[2].face_ids, first[2].other_face_ids
    swapped = Suggestion("same_person", b, other_face_ids=a, score=0.2, bar=0.4)
    assert store(settings, [first[2], swapped, first[2]]) == 1


def test_faces_a_human_labelled_are_dropped_and_open_ones_go_stale(settings, tpl):
    f = tpl.faces
    labels.label_face(settings, f[3][0], "Dora", actor="tester")
    qs = [Suggestion("face_is_person", (f[3][0],), person_id=tpl.alice, score=0.3, bar=0.4),  # labelled: dropped
          Suggestion("cluster_is_person", tuple(f[3]), person_id=tpl.bob, score=0.3, bar=0.4)]  # the face left out
    assert store(settings, qs) == 1
    (q,) = sg.list_suggestions(settings)
    assert sorted(x.face_id for x in q.faces) == sorted(f[3][1:]) and q.settles == 2

    # both remaining faces labelled by a person after organise asked: the question reads stale, answering it conflicts
    for fid in f[3][1:]:
        labels.label_face(settings, fid, "Dora", actor="tester")
    assert sg.count_suggestions(settings) == 0 and sg.count_suggestions(settings, status="stale") == 1
    assert sg.get_suggestion(settings, q.id).status == "stale"
    with pytest.raises(Conflict):
        sg.accept_suggestion(settings, q.id)
    with session_scope(settings.sql_url) as s:
        assert s.get(SuggestionRecord, q.id).status == "stale"  # recorded, not just computed


def test_the_photo_shown_beside_a_question_is_the_candidates_while_it_is_theirs(settings, tpl):
    """A question may point at the candidate's face its evidence came from; the listing shows it only while that
    face is still theirs (a person may relabel it), and a question about two groups points at nobody's."""
    f = tpl.faces
    store(settings, [Suggestion("face_is_person", (f[0][2],), person_id=tpl.alice, score=0.35, bar=0.40, evidence_face_id=f[0][1]),
                     Suggestion("same_person", (f[2][0],), other_face_ids=tuple(f[2][1:]), score=0.38, bar=0.40,
                                evidence_face_id=f[0][1])])
    q = sg.list_suggestions(settings, kind="face_is_person")[0]
    assert q.evidence_face.face_id == f[0][1] and q.evidence_face.photo_path and q.evidence_face.person_id == tpl.alice
    assert sg.list_suggestions(settings, kind="same_person")[0].evidence_face is None
    labels.label_face(settings, f[0][1], tpl.bob, actor="tester")  # not Alice after all
    assert sg.get_suggestion(settings, q.id).evidence_face is None


def test_a_deleted_person_makes_the_question_stale(settings, tpl):
    store(settings, [Suggestion("face_is_person", (tpl.faces[2][0],), person_id=tpl.bob, score=0.3, bar=0.4)])
    (q,) = sg.list_suggestions(settings)
    labels.delete_person(settings, tpl.bob, actor="tester")
    assert sg.list_suggestions(settings) == []
    stale = sg.get_suggestion(settings, q.id)
    assert stale.status == "stale" and stale.person.name is None  # the name is erased everywhere
    with pytest.raises(Conflict):
        sg.reject_suggestion(settings, q.id)
    # an inactive person is never proposed
    assert store(settings, [Suggestion("face_is_person", (tpl.faces[2][0],), person_id=tpl.bob, score=0.3, bar=0.4)]) == 0


def test_errors_are_typed(settings, tpl):
    with pytest.raises(NotFound):
        sg.accept_suggestion(settings, 4242)
    with pytest.raises(NotFound):
        sg.get_suggestion(settings, 4242)
    with pytest.raises(InvalidInput):
        sg.reject_suggestion(settings, "abc")
    with pytest.raises(InvalidInput):
        sg.list_suggestions(settings, kind="nonsense")
    with pytest.raises(InvalidInput):
        sg.list_suggestions(settings, status="maybe")
    bad = [
        Suggestion("nonsense", (tpl.faces[0][0],), person_id=tpl.alice),  # type: ignore[arg-type]
        Suggestion("face_is_person", tuple(tpl.faces[2][:2]), person_id=tpl.alice),  # one face only
        Suggestion("cluster_is_person", tuple(tpl.faces[2])),  # no candidate
        Suggestion("same_person", (), person_id=tpl.alice, other_person_id=tpl.alice),
        Suggestion("same_person", (tpl.faces[2][0],)),  # one group only
    ]
    for b in bad:
        with pytest.raises(InvalidInput):
            store(settings, [standard(tpl)[0], b])
    assert sg.count_suggestions(settings, status="all") == 0  # nothing stored from a list with a bad entry
    store(settings, standard(tpl)[:1])
    with pytest.raises(InvalidInput):  # "is this Alice?" takes no name
        sg.accept_suggestion(settings, sg.list_suggestions(settings)[0].id, name="Someone")


# --------------------------------------------------------------------------------------------------------------
# the other shapes
# --------------------------------------------------------------------------------------------------------------


def test_two_people_merge_on_yes_and_are_never_asked_again_on_no(settings, tpl):
    f = tpl.faces
    carol = labels.label_face(settings, f[2][0], "Carol", actor="tester").person_id
    caro = labels.label_face(settings, f[2][1], "Caro", actor="tester").person_id
    labels.label_face(settings, f[2][2], carol, actor="tester")
    same = Suggestion("same_person", (), person_id=caro, other_person_id=carol, score=0.5, bar=0.6)
    also = Suggestion("same_person", (), person_id=tpl.alice, other_person_id=tpl.bob, score=0.2, bar=0.6)
    assert store(settings, [same, also]) == 2
    by_people = {frozenset((s.person.person_id, s.other_person.person_id)): s for s in sg.list_suggestions(settings)}
    q = by_people[frozenset((carol, caro))]
    assert {q.person.name, q.other_person.name} == {"Carol", "Caro"} and q.settles == 1  # Caro's one face would move
    assert q.priority == pytest.approx(1 * 0.5 / 0.6)

    res = sg.accept_suggestion(settings, q.id, actor="tester")  # into Carol: she has more faces
    assert res.person_id == carol and res.changed == [f[2][1]]
    with session_scope(settings.sql_url) as s:
        assert (s.get(Person, caro).status, s.get(Person, caro).merged_into) == ("merged", carol)
    assert [e.actor for e in events(settings, "merge_persons")] == ["tester", "tester"]

    no = by_people[frozenset((tpl.alice, tpl.bob))]
    sg.reject_suggestion(settings, no.id, actor="tester")
    with session_scope(settings.sql_url) as s:
        assert sg.cannot_link_persons(s) == [tuple(sorted((tpl.alice, tpl.bob)))]
        assert sg.cannot_link_pairs(s) == []
    assert store(settings, [also, Suggestion("same_person", (), person_id=tpl.bob, other_person_id=tpl.alice, score=0.3, bar=0.6)]) == 0
    # and after Bob is merged into someone else, that person and Alice are still known to differ
    bert = labels.label_face(settings, f[3][0], "Bert", actor="tester").person_id
    labels.merge_persons(settings, [tpl.bob], bert, actor="tester")
    assert store(settings, [Suggestion("same_person", (), person_id=tpl.alice, other_person_id=bert, score=0.3, bar=0.6)]) == 0


def test_two_groups_yes_links_them_and_names_them(settings, tpl):
    f = tpl.faces
    a, b = (f[3][0],), tuple(f[3][1:])
    store(settings, [Suggestion("same_person", a, other_face_ids=b, cluster_id=cluster_of(settings, a[0]),
                                other_cluster_id=cluster_of(settings, b[0]), score=0.35, bar=0.4)])
    (q,) = sg.list_suggestions(settings)
    res = sg.accept_suggestion(settings, q.id, actor="tester", name="Dora")
    assert res.name == "Dora" and res.created and sorted(res.changed) == sorted(f[3])
    for fid in f[3]:
        got = face(settings, fid)
        assert got.person_id == res.person_id and got.assignment_source in ("manual", "cluster")
    with session_scope(settings.sql_url) as s:
        must = sg.must_link_pairs(s)
        rows = list(s.scalars(select(FacePairConstraint)))
    assert must == sorted({tuple(sorted((a[0], x))) for x in b}) and all(r.actor == "tester" and r.same for r in rows)
    assert sg.get_suggestion(settings, q.id).answer["person"] == res.person_id


def test_python_api_has_real_methods(settings, tpl):
    import inspect

    from face_pipeline.api import FacePipeline

    for name in ("list_suggestions", "count_suggestions", "get_suggestion", "accept_suggestion", "reject_suggestion"):
        method = inspect.getattr_static(FacePipeline, name)  # defined on the class, not produced by __getattr__
        assert callable(method) and method.__doc__, name
    assert "name" in inspect.signature(FacePipeline.accept_suggestion).parameters

    fp = FacePipeline(home=settings.home_dir, database_url=None, qdrant_url=None)
    store(settings, standard(tpl))
    listed = fp.list_suggestions(kind="cluster_is_person")
    assert [s.kind for s in listed] == ["cluster_is_person"] and fp.count_suggestions() == 3
    res = fp.accept_suggestion(listed[0].id, actor="notebook")
    assert res.person_id == tpl.bob and fp.get_suggestion(listed[0].id).actor == "notebook"
    other = fp.list_suggestions(kind="face_is_person")[0]
    fp.reject_suggestion(other.id)
    assert fp.get_suggestion(other.id).status == "rejected" and fp.count_suggestions() == 1


def test_a_whole_cluster_is_labelled_by_label_cluster_and_a_changed_one_face_by_face(settings, tpl):
    f = tpl.faces
    cluster = cluster_of(settings, f[3][0])
    assert cluster and cluster.startswith("unknown_cluster_")
    with session_scope(settings.sql_url) as s:
        members = tuple(s.scalars(select(FaceInstance.face_id).where(FaceInstance.cluster_id == cluster)))
    other = cluster_of(settings, f[2][0])
    with session_scope(settings.sql_url) as s:
        others = tuple(s.scalars(select(FaceInstance.face_id).where(FaceInstance.cluster_id == other)))
    assert other and other != cluster and len(others) >= 2
    store(settings, [Suggestion("cluster_is_person", members, person_id=tpl.alice, cluster_id=cluster, score=0.3, bar=0.4),
                     Suggestion("cluster_is_person", others[:-1], person_id=tpl.bob, cluster_id=other, score=0.3, bar=0.4)])
    whole, part = sorted(sg.list_suggestions(settings), key=lambda q: q.cluster_id != cluster)

    res = sg.accept_suggestion(settings, whole.id, actor="tester")
    assert sorted(res.changed + res.conflicts) == sorted(members) and res.changed
    assert {(e.actor, e.cluster_id) for e in events(settings, "label_cluster")} == {("tester", cluster)}
    for fid in res.changed:
        assert (face(settings, fid).person_id, face(settings, fid).assignment_source) == (tpl.alice, "cluster")

    # the cluster holds a face the question did not show: only the faces shown are labelled
    res = sg.accept_suggestion(settings, part.id, actor="tester")
    assert sorted(res.changed + res.conflicts) == sorted(others[:-1])
    assert face(settings, others[-1]).person_id is None
    assert {e.face_id for e in events(settings, "label_face") if e.actor == "tester"} == set(res.changed)


def test_a_group_and_a_person(settings, tpl):
    """"the same person?" between a group of unnamed faces and a person is a faces → person question, whichever
    side the producer put the person on: yes labels the faces, no rejects the person for each of them."""
    f = tpl.faces
    store(settings, [Suggestion("same_person", (), other_face_ids=tuple(f[2]), person_id=tpl.bob, score=0.3, bar=0.4),
                     Suggestion("same_person", tuple(f[3]), other_person_id=tpl.alice, score=0.3, bar=0.4)])
    by_person = {q.person.person_id: q for q in sg.list_suggestions(settings)}
    assert by_person[tpl.bob].question == "Are these 3 faces Bob?" and by_person[tpl.bob].other_person is None
    res = sg.reject_suggestion(settings, by_person[tpl.bob].id, actor="tester")
    assert sorted(res.changed) == sorted(f[2])
    with session_scope(settings.sql_url) as s:
        assert {r.face_id for r in s.scalars(select(FaceRejection).where(FaceRejection.person_id == tpl.bob))} == set(f[2])
    res = sg.accept_suggestion(settings, by_person[tpl.alice].id, actor="tester")
    assert sorted(res.changed + res.conflicts) == sorted(f[3]) and {face(settings, x).person_id for x in res.changed} == {tpl.alice}


# --------------------------------------------------------------------------------------------------------------
# end to end: organise asks, a person answers
# --------------------------------------------------------------------------------------------------------------


def test_organise_asks_and_the_answer_becomes_a_label(settings, tpl):
    """With the naming bar set above what any match reaches, organise must not name Alice's third photo; the
    evidence (above the impostor bar) becomes a question instead, and a yes makes it a human label."""
    f = tpl.faces
    strict = Settings(home=settings.home_dir, database_url=None, qdrant_url=None, person_match_threshold=0.99)
    rep = organize.supervised_assignment(strict)
    assert face(strict, f[0][2]).person_id is None  # not named: below the bar
    assert rep.suggestions, "organise made no suggestion"
    about_alice = [q for q in sg.list_suggestions(strict, limit=500) if q.person and q.person.person_id == tpl.alice]
    asked = [q for q in about_alice if f[0][2] in {x.face_id for x in q.faces}]
    assert asked, f"no open question puts Alice's third photo to Alice: {[(q.kind, q.face_count) for q in about_alice]}"
    assert asked[0].evidence_face and asked[0].evidence_face.face_id in f[0][:2]  # shown beside: a photo Alice was named on
    assert 0 < sg.count_suggestions(strict) <= len(rep.suggestions)

    res = sg.accept_suggestion(strict, asked[0].id, actor="tester")
    assert f[0][2] in res.changed
    got = face(strict, f[0][2])
    assert got.person_id == tpl.alice and got.assignment_source in ("manual", "cluster")

    # organise again: the answered question is not asked again, and the label stands
    organize.supervised_assignment(strict)
    again = [q for q in sg.list_suggestions(strict, limit=500) if f[0][2] in {x.face_id for x in q.faces}]
    assert again == [] and face(strict, f[0][2]).person_id == tpl.alice
    assert sg.get_suggestion(strict, asked[0].id).status == "accepted"


def test_organise_never_asks_or_names_again_after_a_no(settings, tpl, tmp_path, monkeypatch):
    f = tpl.faces
    control = home_from_template(tpl, tmp_path / "control", monkeypatch)  # the same library, nobody said no
    organize.supervised_assignment(control)
    assert face(control, f[0][2]).person_id == tpl.alice  # at the default bar her third photo is named
    strict = Settings(home=settings.home_dir, database_url=None, qdrant_url=None, person_match_threshold=0.99)
    organize.supervised_assignment(strict)
    asked = [q for q in sg.list_suggestions(strict, limit=500)
             if q.person and q.person.person_id == tpl.alice and f[0][2] in {x.face_id for x in q.faces}]
    assert asked
    sg.reject_suggestion(strict, asked[0].id, actor="tester")

    organize.supervised_assignment(strict)  # asks again: not this
    assert not [q for q in sg.list_suggestions(strict, limit=500)
                if q.person and q.person.person_id == tpl.alice and f[0][2] in {x.face_id for x in q.faces}]
    organize.supervised_assignment(settings)  # the default bar: the "no" holds
    assert face(settings, f[0][2]).person_id != tpl.alice


def test_a_name_chooses_who_a_merge_keeps(settings, tpl):
    f = tpl.faces
    dave = labels.label_face(settings, f[3][0], "Dave", actor="tester").person_id
    labels.label_face(settings, f[3][1], dave, actor="tester")
    dan = labels.label_face(settings, f[3][2], "Dan", actor="tester").person_id
    store(settings, [Suggestion("same_person", (), person_id=dave, other_person_id=dan, score=0.5, bar=0.6)])
    (q,) = sg.list_suggestions(settings)
    with pytest.raises(InvalidInput):
        sg.accept_suggestion(settings, q.id, name="Alice")  # neither of the two
    res = sg.accept_suggestion(settings, q.id, name="Dan", actor="tester")  # the smaller one keeps the name
    assert res.person_id == dan and sorted(res.changed) == sorted(f[3][:2])
    with session_scope(settings.sql_url) as s:
        assert s.get(Person, dave).merged_into == dan


def test_a_name_given_is_put_first_and_a_no_takes_it_away_for_good(settings, tpl):
    """"check_names": a question about a name automation gave. It is listed before questions about unnamed faces
    even when those would settle more (a wrong name is far worse than a missing one); "no" takes the name away at
    once and organise never gives it back; "yes" makes it a human label."""
    f = tpl.faces
    organize.supervised_assignment(settings)
    named = face(settings, f[0][2])
    assert named.person_id == tpl.alice and named.assignment_source == "auto"  # named by automation at the default bar
    store(settings, [
        Suggestion("cluster_is_person", tuple(f[2]), person_id=tpl.bob, score=0.39, bar=0.40),
        Suggestion("check_names", (f[0][2],), person_id=tpl.alice, score=0.55, bar=0.40),
    ])
    queue = sg.list_suggestions(settings)
    assert [q.kind for q in queue][:2] == ["check_names", "cluster_is_person"]
    assert queue[0].priority < queue[1].priority  # first by kind, not by size
    assert "automatically" in queue[0].question and "Alice" in queue[0].question
    assert [q.kind for q in sg.list_suggestions(settings, kind="check_names")] == ["check_names"]

    sg.reject_suggestion(settings, queue[0].id, actor="tester")
    assert face(settings, f[0][2]).person_id is None  # the name goes at once
    organize.supervised_assignment(settings)
    assert face(settings, f[0][2]).person_id != tpl.alice  # and never comes back
    assert not [q for q in sg.list_suggestions(settings, limit=500)
                if q.person and q.person.person_id == tpl.alice and f[0][2] in {x.face_id for x in q.faces}]


def test_among_names_given_at_the_bar_the_most_doubtful_is_asked_first(settings, tpl):
    """Two names given whose evidence stayed at or under the bar reach the same priority (closeness 1, one face
    each): the weaker evidence is the more doubtful name, asked first (other questions: the stronger first)."""
    f = tpl.faces
    store(settings, [Suggestion("check_names", (f[0][2],), person_id=tpl.alice, score=0.38, bar=0.40),
                     Suggestion("check_names", (f[1][1],), person_id=tpl.bob, score=0.30, bar=0.40),
                     Suggestion("face_is_person", (f[2][0],), person_id=tpl.bob, score=0.60, bar=0.40),
                     Suggestion("face_is_person", (f[2][1],), person_id=tpl.bob, score=0.70, bar=0.40)])
    assert [q.score for q in sg.list_suggestions(settings)] == [0.30, 0.38, 0.70, 0.60]


def test_a_yes_to_a_name_given_makes_it_a_human_label(settings, tpl):
    f = tpl.faces
    organize.supervised_assignment(settings)
    assert face(settings, f[0][2]).assignment_source == "auto"
    store(settings, [Suggestion("check_names", (f[0][2],), person_id=tpl.alice, score=0.55, bar=0.40)])
    (q,) = sg.list_suggestions(settings, kind="check_names")
    sg.accept_suggestion(settings, q.id, actor="tester")
    got = face(settings, f[0][2])
    assert got.person_id == tpl.alice and got.assignment_source in ("manual", "cluster")
