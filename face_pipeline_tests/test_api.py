"""The Python API object: label operations bound to one home, behaving like the CLI (same events)."""

from __future__ import annotations

import pytest

from face_pipeline_tests.conftest import copy_photos, lfw_people, run_ingest


def test_api_labels_a_real_face_and_finds_the_person(faces_dev, models, tmp_path, monkeypatch):
    from face_pipeline.api import FacePipeline
    from face_pipeline.core.labels import LabelError

    for key in [k for k in list(__import__("os").environ) if k.startswith("FACE_")]:
        monkeypatch.delenv(key, raising=False)
    people = lfw_people(faces_dev, 2, 4)
    (a, a_photos), (b, b_photos) = list(people.items())
    library = tmp_path / "library"
    copy_photos(a_photos[:3] + b_photos[:3], library)
    fp = FacePipeline(home=tmp_path / "home")
    run_ingest(fp.settings, models, "b1", library)
    assert fp.stats()["faces"] >= 6
    frame = fp.export_frame()
    first_a = frame[frame.photo_path.str.contains(a)].sort_values("det_score").face_id.iloc[-1]
    result = fp.label_face(first_a, a, actor="api-test")
    assert result.person_id and result.name == a
    assert [p.name for p in fp.list_persons()] == [a]
    assert fp.recent_events()[-1].actor == "api-test"
    matches = fp.find_person(a_photos[3])
    assert any(m.name == a for m in matches), matches
    with pytest.raises(LabelError):
        fp.label_cluster("unknown_cluster_999", "Nobody")
    with pytest.raises(AttributeError):
        fp.not_an_operation  # noqa: B018


def test_api_methods_are_real_methods_with_signatures_and_docs():
    """The API is explicit: help(FacePipeline) and IDEs show every operation's parameters (no __getattr__)."""
    import inspect

    from face_pipeline.api import FacePipeline

    assert "__getattr__" not in FacePipeline.__dict__
    expected = {
        "label_cluster": ["cluster_id", "name"], "label_face": ["face_id", "name"], "reassign_face": ["face_id", "to"],
        "assign_person": ["face_id"], "reject_face": ["face_id", "person"], "unassign_face": ["face_id"],
        "merge_persons": ["sources", "target"], "split_person": ["person", "face_ids", "new_name"],
        "hide_person": ["person"], "unhide_person": ["person"], "rename_person": ["person", "new_name"],
        "delete_person": ["person"], "get_person": ["person"], "list_persons": ["include_hidden"],
        "list_clusters": [], "recent_events": ["since_id", "limit"], "find_person": ["image_path"],
        "search": ["image_path", "limit"], "stats": [], "export_frame": [],
    }
    for name, leading in expected.items():
        method = FacePipeline.__dict__.get(name)
        assert inspect.isfunction(method), name
        params = [p for p in inspect.signature(method).parameters if p != "self"]
        assert params[: len(leading)] == leading, (name, params)
