"""The installed ``face-pipeline`` console script, run as a real subprocess against a private home."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from face_pipeline.core.report import EXPORT_COLUMNS
from face_pipeline.core.samples import sample_photo_paths
from face_pipeline_tests.conftest import _fast_base, copy_photos, lfw_people

CLI = Path(sys.executable).parent / "face-pipeline"
COLUMNS = ["face_id", "image_id", "photo_path", "x1", "y1", "x2", "y2", "det_score", "quality_score", "person_id",
           "person_name", "cluster_id", "person_confidence", "assignment_source"]


# longer than 80 columns once printed, with brackets that a rich-markup printer would eat
MISSING = "[bold] 2024 summer trip, a folder name long enough to wrap at eighty columns/no_such_folder"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FACE_", "DAGSTER_")) and k not in ("DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY")}
    env.pop("COLUMNS", None)  # stdout/stderr are pipes, as in CI: no terminal width to lean on
    env.update(FACE_PIPELINE_HOME=str(home), ORT_DISABLE_TELEMETRY="1", DAGSTER_DISABLE_TELEMETRY="1")
    return env


def _start(home: Path, *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(CLI), *args], env=_env(home), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _run(home: Path, *args: str, cwd: Path) -> tuple[int, str, str]:
    return _finish(_start(home, *args, cwd=cwd))


def _one_line_error(rc: int, out: str, err: str) -> str:
    assert rc != 0, (out, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def cli_library(tmp_path_factory, faces_dev):
    """One real `face-pipeline ingest` of 3 photos into a fresh home, shared by the read-only CLI tests.

    The home sits on a RAM-backed folder where there is one (see conftest._fast_base): the embedded Dagster
    instance commits on every event and a shared disk makes that the slowest part of the run."""
    if not CLI.exists():
        pytest.skip(f"console script {CLI} not installed (pip install -e .)")
    root = tmp_path_factory.mktemp("cli")
    fast = Path(tempfile.mkdtemp(prefix="fp-cli-", dir=_fast_base()))
    home, photos = fast / "home", root / "photos" / "holiday"
    people = lfw_people(faces_dev, n=2, per_person=1)
    copy_photos([ps[0] for ps in people.values()], photos)
    copy_photos([p for p in sample_photo_paths() if p.name == "t1.jpg"], photos, prefix_person=False)
    try:
        # the error cases run meanwhile: they must fail before touching the home
        errors = {"missing": _start(home, "ingest", str(root / MISSING), "--batch", "x", cwd=root),
                  "txt": _start(home, "export", "--out", str(root / "faces.txt"), cwd=root)}
        rc, out, err = _run(home, "ingest", str(photos), "--batch", "summer 2024", cwd=root)
        assert rc == 0, f"stdout:\n{out}\nstderr:\n{err}"
        yield {"home": home, "root": root, "photos": photos, "ingest_out": out, "ingest_err": err,
               **{k: _finish(p) for k, p in errors.items()}}
    finally:
        shutil.rmtree(fast, ignore_errors=True)


def test_ingest_records_the_run_in_the_homes_dagster_instance(cli_library):
    home, out = cli_library["home"], cli_library["ingest_out"]
    assert "summer_2024" in out and "3 photos" in out and "0 failed" in out
    # the follow-up organise ran and says what happened to the new faces; Dagster's log only under --verbose
    assert "new faces: 0 joined known people" in out and "new unknown clusters formed" in out
    assert " - dagster - " not in cli_library["ingest_err"] and "Traceback" not in cli_library["ingest_err"]
    assert (home / "face_pipeline.sqlite").is_file() and (home / "qdrant").is_dir()
    dagster_yaml = (home / "dagster_home" / "dagster.yaml").read_text()
    assert "telemetry" in dagster_yaml

    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(home / "dagster_home"))
    try:
        runs = instance.get_runs()  # newest first
        assert [(r.job_name, r.status) for r in runs] == [("organize_new_faces", dg.DagsterRunStatus.SUCCESS),
                                                          ("ingest_batch", dg.DagsterRunStatus.SUCCESS)]
        run = runs[1]
        assert runs[0].tags.get("dagster/partition") == "summer_2024"
        assert run.tags.get("dagster/partition") == "summer_2024"
        assert instance.get_dynamic_partitions("photo_batches") == ["summer_2024"]
        for asset in ("face_detections", "face_embeddings"):
            assert instance.get_latest_materialization_event(dg.AssetKey(asset)).run_id == run.run_id
    finally:
        instance.dispose()


def test_stats_and_exports(cli_library):
    home, root = cli_library["home"], cli_library["root"]
    csv_out, pq_out = root / "out" / "faces.csv", root / "out" / "faces.parquet"
    (root / "out").mkdir(exist_ok=True)
    procs = [_start(home, "stats", "--json", cwd=root), _start(home, "export", "--out", str(csv_out), cwd=root)]
    # the Parquet export opens the Qdrant folder; the others only read SQL, so all three run at once
    procs.append(_start(home, "export", "--out", str(pq_out), "--with-embeddings", cwd=root))
    (rc_s, stats_out, err_s), (rc_c, out_c, err_c), (rc_p, out_p, err_p) = [_finish(p) for p in procs]
    assert (rc_s, rc_c, rc_p) == (0, 0, 0), (err_s, err_c, err_p)

    stats = json.loads(stats_out)
    assert stats["batches"] == 1 and stats["photos"] == 3 and stats["photos_by_status"] == {"ok": 3}
    faces = stats["faces"]
    assert faces >= 8 and stats["faces_embedded"] == faces  # t1's six plus the two faces_dev people

    assert COLUMNS == EXPORT_COLUMNS
    frame = pd.read_csv(csv_out)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == faces and frame["face_id"].is_unique
    assert all(fid.startswith(f"{img}_face") for fid, img in zip(frame["face_id"], frame["image_id"]))
    assert all(Path(p).is_file() and Path(p).parent == cli_library["photos"] for p in frame["photo_path"])
    assert (frame["x2"] > frame["x1"]).all() and frame["quality_score"].between(0, 1).all()
    assert f"wrote {faces} faces" in out_c

    table = pd.read_parquet(pq_out)
    assert list(table.columns) == COLUMNS + ["embedding"]
    assert sorted(table["face_id"]) == sorted(frame["face_id"])
    X = np.stack(table["embedding"].to_numpy())
    assert X.shape == (faces, 512)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-3)


def test_errors_are_one_line_without_traceback(cli_library):
    line = _one_line_error(*cli_library["missing"])
    assert line == f"error: {cli_library['root'] / MISSING} is not a folder"
    line = _one_line_error(*cli_library["txt"])
    assert ".csv or .parquet" in line and ".txt" in line
    assert not (cli_library["root"] / "faces.txt").exists()


def test_out_needs_an_existing_folder(cli_library):
    home, root = cli_library["home"], cli_library["root"]
    line = _one_line_error(*_run(home, "export", "--out", str(root / "typo_folder" / "deep" / "faces.csv"), cwd=root))
    assert "typo_folder" in line and "does not exist" in line
    assert not (root / "typo_folder").exists()


@pytest.mark.parametrize("bad, why", [("a/b/c", "path separator"), ("..", "not a valid batch name"), ("x" * 300, "at most 100")])
def test_bad_batch_names_are_refused_before_anything_is_written(cli_library, tmp_path, bad, why):
    fresh = tmp_path / "never_created_home"
    line = _one_line_error(*_run(fresh, "ingest", str(cli_library["photos"]), "--batch", bad, cwd=tmp_path))
    assert why in line
    assert not fresh.exists()


def test_names_with_brackets_are_text_and_csv_cells_cannot_be_formulas(cli_library):
    """Runs last in this module: it labels faces of the shared library."""
    home, root = cli_library["home"], cli_library["root"]
    frame = pd.read_csv(_csv(home, root, "before.csv"))
    faces = sorted(frame["face_id"])
    names = {faces[0]: "John [work]", faces[1]: "x[/]y", faces[2]: "=HYPERLINK(\"http://evil\",\"x\")", faces[3]: "@SUM(1)"}
    for face, name in names.items():
        rc, out, err = _run(home, "label-face", face, name, cwd=root)
        assert rc == 0 and name in out, (out, err)
    photo = next(cli_library["photos"].glob("*.jpg"))
    for args in (("persons",), ("person", "x[/]y"), ("person", "John [work]"), ("search", str(photo)), ("find", str(photo))):
        rc, out, err = _run(home, *args, cwd=root)
        assert rc == 0 and "Traceback" not in err, (args, out, err)
        if args[0] != "find":
            assert any(n in out for n in names.values()), (args, out)
        if args[0] == "persons":
            assert all(n in out for n in names.values()), out
        if args[0] == "person":
            assert args[1] in out and "faces" in out and "object at" not in out and "PersonInfo(" not in out

    exported = pd.read_csv(_csv(home, root, "after.csv"), keep_default_na=False)
    by_face = dict(zip(exported["face_id"], exported["person_name"]))
    assert by_face[faces[0]] == "John [work]" and by_face[faces[1]] == "x[/]y"
    assert by_face[faces[2]] == "'" + names[faces[2]] and by_face[faces[3]] == "'@SUM(1)"
    assert not any(str(v).startswith(("=", "+", "-", "@")) for col in exported.columns
                   if not pd.api.types.is_numeric_dtype(exported[col]) for v in exported[col])


def _csv(home: Path, root: Path, name: str) -> Path:
    out = root / name
    rc, _, err = _run(home, "export", "--out", str(out), cwd=root)
    assert rc == 0, err
    return out


def test_a_damaged_library_is_refused_named_by_doctor_and_repaired(cli_library):
    """Runs last: it breaks and repairs the shared library (labels must survive the repair)."""
    home, root = cli_library["home"], cli_library["root"]
    before = pd.read_csv(_csv(home, root, "labels_before.csv"), keep_default_na=False)
    photo = next(cli_library["photos"].glob("*.jpg"))
    rc, out, err = _run(home, "doctor", cwd=root)
    assert rc == 0 and "library healthy" in out, (out, err)

    shutil.rmtree(home / "qdrant")
    for args in (("cluster",), ("search", str(photo)), ("export", "--out", str(root / "v.parquet"), "--with-embeddings")):
        line = _one_line_error(*_run(home, *args, cwd=root))
        assert "vector store has no collection" in line and "doctor --repair" in line, (args, line)
    assert not (root / "v.parquet").exists()
    rc, out, err = _run(home, "doctor", cwd=root)
    assert rc == 1 and "problem: the vector store has no collection faces" in out, (out, err)

    (home / "artifacts" / "batches" / "summer_2024" / "embeddings.npz").unlink()
    rc, out, err = _run(home, "doctor", cwd=root)
    assert rc == 1 and "embedding file" in out and "is missing" in out and "2 problem(s)" in out, out
    line = _one_line_error(*_run(home, "find", str(photo), cwd=root))
    assert "embedding file" in line and "summer_2024" in line

    rc, out, err = _run(home, "doctor", "--repair", cwd=root)
    assert rc == 0 and "embedding file rebuilt" in out and "vector store rebuilt" in out and "library healthy" in out, (out, err)
    rc, out, err = _run(home, "cluster", cwd=root)
    assert rc == 0, err
    after = pd.read_csv(_csv(home, root, "labels_after.csv"), keep_default_na=False)
    manual = before[before["assignment_source"] == "manual"][["face_id", "person_id"]].values.tolist()
    assert manual and manual == after[after["assignment_source"] == "manual"][["face_id", "person_id"]].values.tolist()


def test_without_face_pipeline_home_the_library_goes_to_dot_face_pipeline_not_home(tmp_path, faces_dev):
    """Run from another folder with HOME set and FACE_PIPELINE_HOME unset (no Makefile): the library must be created
    in ./.face_pipeline of the working folder, and nothing may be written into the user's home folder."""
    user_home, work = tmp_path / "user_home", tmp_path / "work"
    user_home.mkdir()
    work.mkdir()
    photos = work / "photos"
    photos.mkdir()
    src = next(iter(faces_dev.values()))[0]
    shutil.copy(src, photos / src.name)
    env = _env(tmp_path / "unused")
    del env["FACE_PIPELINE_HOME"]
    env["HOME"] = str(user_home)
    for args in (["init"], ["ingest", str(photos), "--batch", "one"], ["stats", "--json"]):
        proc = subprocess.run([str(CLI), *args], env=env, cwd=work, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    assert (work / ".face_pipeline" / "face_pipeline.sqlite").exists()
    assert json.loads(proc.stdout)["faces"] >= 1
    assert sorted(p.name for p in user_home.rglob("*")) == [], "something was written into $HOME"
