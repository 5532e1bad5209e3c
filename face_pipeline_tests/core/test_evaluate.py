"""The quality floors: the whole pipeline on the labelled faces_dev photos, against the protocol users live with.

``evaluate(faces_dev)`` runs once for the module with default settings: real detector and recogniser, real SQL
and Qdrant in a temporary home; 3 labelled photos for every second person (sorted by name), everything else
assigned and clustered by the pipeline, then scored beside the baselines (HDBSCAN, Immich-style, plain Chinese
Whispers) on the same embeddings and labels. The floors are product requirements: when one fails, the table
printed with the failure says where.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from face_pipeline.core.evaluate import EvalReport, evaluate

FACES_DEV = Path(os.environ.get("FACE_DEV_DATA") or Path(__file__).resolve().parents[2].parent / "shared/data/faces_dev")

PRECISION_FLOOR = 0.995
RECALL_FLOOR = 0.97
UNKNOWN_BCUBED_FLOOR = 0.97


def _people(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def report(models) -> EvalReport:
    if not FACES_DEV.is_dir():
        pytest.skip(f"faces_dev photos not found at {FACES_DEV} (set FACE_DEV_DATA to a folder of <Person>/<photo> files)")
    if len(_people(FACES_DEV)) < 10:
        pytest.skip(f"faces_dev at {FACES_DEV} holds fewer than 10 people")
    with pytest.MonkeyPatch.context() as mp:
        # Default settings means the product defaults, not whatever FACE_* the developer's shell exports.
        for key in list(os.environ):
            if key.startswith("FACE_") or key in ("DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY", "FACE_PIPELINE_HOME"):
                mp.delenv(key, raising=False)
        rep = evaluate(FACES_DEV, models=models)
    print(f"\nevaluate({FACES_DEV}): {rep.photos} photos, {rep.faces} faces, {rep.people} people "
          f"({rep.known_people} known, {rep.labelled_faces} labelled faces)\n{rep.table()}")
    return rep


def test_protocol_is_the_documented_one(report):
    people = _people(FACES_DEV)
    assert report.people == len(people)
    assert report.known_people == math.ceil(len(people) / 2)  # every second person, sorted by name
    assert report.labelled_faces == 3 * report.known_people
    assert report.photos >= 0.95 * sum(1 for p in people for _ in (FACES_DEV / p).iterdir())  # detection found nearly all
    assert report.faces >= report.photos
    assert report.rows[0].name.startswith("face_pipeline") and len(report.rows) == 6


def test_assignment_precision_floor_and_no_stranger_named(report):
    ours = report.ours
    assert ours.assign_precision >= PRECISION_FLOOR, report.table()
    assert ours.unknown_false_rate == 0.0, report.table()  # no stranger / unknown person given a known name


def test_assignment_recall_at_least_plain_chinese_whispers(report):
    # recall: the floor, or at least what plain Chinese Whispers names with the same labels
    cw = next(r for r in report.rows if r.name.startswith("chinese whispers cos>0.4"))
    assert report.ours.assign_recall >= min(RECALL_FLOOR, cw.assign_recall), report.table()


def test_unknown_people_are_clustered_above_the_floor(report):
    assert report.ours.unknown_bcubed_f >= UNKNOWN_BCUBED_FLOOR, report.table()


def test_no_person_twice_in_one_photo(report):
    assert report.same_photo_conflicts == 0


@pytest.mark.parametrize("baseline", [1, 2, 3, pytest.param(4, marks=pytest.mark.xfail(
    strict=True, reason="known: on easy faces_dev sparse HDBSCAN names whole clusters (B3 F 0.997); ours asks instead about "
    "a few poor photos of named people (scores inside the impostor range, or no stricter tie) and about groups that hold "
    "no label; on lfw_dev HDBSCAN scores 0.940, ours 0.983")), 5],
    ids=["cw-0.4", "cw-0.5", "average-linkage", "hdbscan", "immich"])
def test_ours_at_least_matches_every_anchor_on_bcubed_f(report, baseline):
    ours, other = report.ours, report.rows[baseline]
    assert ours.bcubed_f >= other.bcubed_f, f"{ours.name} is below {other.name} on BCubed F:\n{report.table()}"


@pytest.mark.parametrize("folders", [[], ["Only_One"]], ids=["no-person", "one-person"])
def test_evaluate_refuses_fewer_than_two_person_folders(tmp_path, folders):
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    (labelled / ".hidden").mkdir()  # hidden folders are not people
    for name in folders:
        (labelled / name).mkdir()
        (labelled / name / "a.jpg").write_bytes(b"not read")
    with pytest.raises(ValueError, match=rf"one sub-folder per person \(found {len(folders)}\)"):
        evaluate(labelled, home=tmp_path / "home")
    assert not (tmp_path / "home").exists()  # refused before anything was created
