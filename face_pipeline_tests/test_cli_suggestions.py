"""``face-pipeline suggestions list / accept / reject`` as real subprocesses on a real home (faces_dev photos
ingested by the real models; suggestions stored the way organise stores them)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from face_pipeline.core import labels
from face_pipeline.core import suggestions as sg
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import FaceAssignmentEvent, FaceInstance, FaceRejection
from face_pipeline.core.suggestions import Suggestion
from face_pipeline_tests.core.test_suggestions import home_from_template, store, template
from face_pipeline_tests.test_cli_people import Cli, _one_line_error


@pytest.fixture
def cli_home(tmp_path_factory, faces_dev, models, tmp_path, monkeypatch):
    t = template(tmp_path_factory, faces_dev, models)
    settings = home_from_template(t, tmp_path, monkeypatch)
    return t, settings, Cli(settings.home_dir, tmp_path)


def _row(out: str, sid: int) -> str:
    return next(line for line in out.splitlines() if line.strip("│ ").startswith(f"{sid} "))


def test_list_accept_reject_through_the_command(cli_home):
    t, settings, cli = cli_home
    f = t.faces
    markup = labels.label_face(settings, f[3][0], "[bold]Eve[/bold]", actor="setup").person_id  # a name that looks like markup
    store(settings, [
        Suggestion("face_is_person", (f[0][2],), person_id=t.alice, score=0.35, bar=0.40),
        Suggestion("cluster_is_person", tuple(f[3][1:]), person_id=markup, score=0.30, bar=0.40),
        Suggestion("face_is_person", (f[2][0],), person_id=t.bob, score=0.20, bar=0.40),
    ])
    ids = {s.person.person_id: s.id for s in sg.list_suggestions(settings)}

    out = cli("suggestions", "list")
    assert "Is this Alice?" in _row(out, ids[t.alice]) and t.alice in out
    assert "[bold]Eve[/bold]" in _row(out, ids[markup])  # shown as text, not swallowed as markup
    assert out.index(f"{ids[markup]} ") < out.index(f"{ids[t.alice]} ") < out.index(f"{ids[t.bob]} ")  # priority order
    (rc1, only, _), (rc2, first, _) = cli.parallel(("suggestions", "list", "--kind", "cluster_is_person"),
                                                   ("suggestions", "list", "--limit", "1"))
    assert rc1 == rc2 == 0
    assert str(ids[markup]) in only and "Is this Alice?" not in only
    assert "more (--offset 1)" in first

    # two answers at once (two processes: SQLite is shared, one of them may find Qdrant busy and leave faces dirty)
    (rc1, yes, err1), (rc2, no, err2) = cli.parallel(("suggestions", "accept", str(ids[t.alice])),
                                                     ("suggestions", "reject", str(ids[t.bob])))
    assert rc1 == rc2 == 0, (err1, err2)
    assert yes.startswith("accept_suggestion → Alice") and "changed: 1" in yes
    assert no.startswith("reject_suggestion") and "changed: 1" in no
    with session_scope(settings.sql_url) as s:
        got = s.get(FaceInstance, f[0][2])
        assert (got.person_id, got.assignment_source) == (t.alice, "manual")
        actors = {e.action: e.actor for e in s.scalars(select(FaceAssignmentEvent).where(FaceAssignmentEvent.reason == f"suggestion {ids[t.alice]}"))}
        assert s.get(FaceRejection, (f[2][0], t.bob)) is not None
    assert actors == {"label_face": "cli", "accept_suggestion": "cli"}

    # errors: one line, exit 1, nothing changed
    again, unknown, bogus, named, listed = cli.parallel(
        ("suggestions", "accept", str(ids[t.alice])), ("suggestions", "reject", "4242"), ("suggestions", "list", "--kind", "bogus"),
        ("suggestions", "accept", str(ids[markup]), "--name", "Someone"), ("suggestions", "list", "--status", "accepted"))
    assert _one_line_error(*again) == f"error: suggestion {ids[t.alice]} is already accepted (by cli)"
    assert _one_line_error(*unknown) == "error: no suggestion with id 4242"
    assert _one_line_error(*bogus).startswith("error: unknown suggestion kind 'bogus'")
    assert "already names its person" in _one_line_error(*named)
    assert listed[0] == 0 and "Is this Alice?" in listed[1] and "Bob" not in listed[1]
    assert sg.count_suggestions(settings) == 1


def test_a_name_given_is_asked_first_and_a_no_from_the_command_takes_it_away(cli_home):
    """``check_names`` through the command: listed first, worded as a name already given, and ``reject`` takes the
    name away at once; organise does not give it back."""
    from face_pipeline.core import organize

    t, settings, cli = cli_home
    f = t.faces
    organize.supervised_assignment(settings)
    with session_scope(settings.sql_url) as s:
        named = s.get(FaceInstance, f[0][2])
        assert (named.person_id, named.assignment_source) == (t.alice, "auto")
    store(settings, [
        Suggestion("cluster_is_person", tuple(f[3]), person_id=t.bob, score=0.39, bar=0.40),
        Suggestion("check_names", (f[0][2],), person_id=t.alice, score=0.60, bar=0.40),
    ])
    ids = {s.kind: s.id for s in sg.list_suggestions(settings)}
    out = cli("suggestions", "list")
    assert "Is this face, named Alice automatically, Alice?" in _row(out, ids["check_names"])
    assert out.index(_row(out, ids["check_names"])) < out.index(_row(out, ids["cluster_is_person"]))
    no = cli("suggestions", "reject", str(ids["check_names"]))
    assert no.startswith("reject_suggestion → Alice") and "unassigned: 1" in no
    organize.supervised_assignment(settings)
    with session_scope(settings.sql_url) as s:
        assert s.get(FaceInstance, f[0][2]).person_id != t.alice
        assert s.get(FaceRejection, (f[0][2], t.alice)) is not None
