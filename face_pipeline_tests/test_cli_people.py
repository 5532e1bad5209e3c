"""The people workflow through the installed ``face-pipeline`` console script, each command a real subprocess
against one private home: ingest six faces_dev people, cluster, name clusters and faces, correct mistakes (move,
merge, split, reject, hide, rename), recognise new photos, export — plus `train` and `evaluate`, and the errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import FaceInstance, FaceRejection, Person
from face_pipeline.settings import Settings
from face_pipeline_tests.conftest import _fast_base, copy_photos, lfw_people
from face_pipeline_tests.defs.test_organize_assets import _centre_faces

CLI = Path(sys.executable).parent / "face-pipeline"
BATCH = "family"
PEOPLE, IN_LIBRARY = 6, 4  # photo 5 of each person stays out of the library, for find/search


def _env(home: Path, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FACE_", "DAGSTER_")) and k not in ("DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY")}
    env.update(FACE_PIPELINE_HOME=str(home), ORT_DISABLE_TELEMETRY="1", DAGSTER_DISABLE_TELEMETRY="1", COLUMNS="200",
               TMPDIR=str(tmp))
    return env


class Cli:
    def __init__(self, home: Path, cwd: Path):
        self.home, self.cwd = home, cwd
        self.tmp = cwd / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([str(CLI), *args], env=_env(self.home, self.tmp), cwd=self.cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    @staticmethod
    def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err

    def __call__(self, *args: str) -> str:
        """Run a command that must succeed; its stdout."""
        rc, out, err = self.finish(self.start(*args))
        assert rc == 0, f"face-pipeline {' '.join(args)} → {rc}\nstdout:\n{out}\nstderr:\n{err}"
        return out

    def parallel(self, *commands: tuple[str, ...]) -> list[tuple[int, str, str]]:
        """Independent commands at once (SQLite is shared safely; only one process gets the Qdrant folder and the
        others leave their payloads dirty for the next run — the product's normal concurrency)."""
        procs = [self.start(*c) for c in commands]
        return [self.finish(p) for p in procs]


def _one_line_error(rc: int, out: str, err: str, code: int = 1, run_log: bool = False) -> str:
    """The error line. ``run_log``: a command that ran a Dagster job, whose run log precedes the error on stderr."""
    assert rc == code, (rc, out, err)
    assert "Traceback" not in err + out, err
    lines = [line for line in err.splitlines() if line.strip()]
    if run_log:
        assert [line for line in lines if line.startswith("error")] == lines[-1:], err
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _people(out: str) -> dict[str, tuple[str, int]]:
    """`persons` table → name → (status, faces)."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if len(cells) == 4 and re.fullmatch(r"person_[0-9a-f]{32}", cells[0]):
            rows[cells[1]] = (cells[2], int(cells[3]))
    return rows


@pytest.fixture(scope="module")
def lib(tmp_path_factory, faces_dev):
    """`ingest` of 6 people x 4 photos and `cluster`, in a fresh home; `evaluate` runs meanwhile."""
    if not CLI.exists():
        pytest.skip(f"console script {CLI} not installed (pip install -e .)")
    people = lfw_people(faces_dev, n=PEOPLE, per_person=IN_LIBRARY + 1)
    root = Path(tempfile.mkdtemp(prefix="fp-cli-people-", dir=_fast_base()))
    try:
        photos = root / "photos" / BATCH
        copied = {name: copy_photos(paths[:IN_LIBRARY], photos) for name, paths in people.items()}
        eval_dir = root / "labelled"
        for name, paths in people.items():
            copy_photos(paths[:IN_LIBRARY], eval_dir / name, prefix_person=False)
        cli = Cli(root / "home", root)
        evaluation = cli.start("evaluate", str(eval_dir))
        ingest_out = cli("ingest", str(photos), "--batch", BATCH)
        cluster_out = cli("cluster")
        settings = Settings(home=cli.home)
        centre = _centre_faces(settings)
        faces = {name: [centre[str(p)] for p in paths] for name, paths in copied.items()}
        yield {"cli": cli, "settings": settings, "names": list(people), "faces": faces, "ingest_out": ingest_out,
               "cluster_out": cluster_out, "new_photo": {n: ps[IN_LIBRARY] for n, ps in people.items()},
               "evaluation": evaluation, "eval_dir": eval_dir}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _state(settings: Settings) -> dict[str, tuple[str | None, str | None, str | None]]:
    """face id → (person name, assignment source, cluster id), read from the home's SQL."""
    with session_scope(settings.sql_url) as s:
        names = dict(s.execute(select(Person.person_id, Person.name)).all())
        return {f.face_id: (names.get(f.person_id), f.assignment_source, f.cluster_id) for f in s.scalars(select(FaceInstance))}


def test_ingest_and_cluster_make_one_unknown_cluster_per_person(lib):
    assert f"batch {BATCH}: {PEOPLE * IN_LIBRARY} photos" in lib["ingest_out"] and "0 failed" in lib["ingest_out"]
    out = lib["cli"]("clusters")
    listed = dict(re.findall(r"(unknown_cluster_\d+)\s*[│|]\s*(\d+)", out))
    assert sorted(listed) == [f"unknown_cluster_{i}" for i in range(1, PEOPLE + 1)]
    assert set(listed.values()) == {str(IN_LIBRARY)}
    state = _state(lib["settings"])
    for name in lib["names"]:  # each person's four faces are one cluster, and no cluster mixes people
        assert len({state[f][2] for f in lib["faces"][name]}) == 1
    assert len({state[lib["faces"][n][0]][2] for n in lib["names"]}) == PEOPLE


def test_naming_correcting_and_recognising_people(lib):
    cli, settings, faces = lib["cli"], lib["settings"], lib["faces"]
    state = _state(settings)
    person_of_cluster = {state[fs[0]][2]: name for name, fs in faces.items()}
    a, b, c, d, e, _ = (person_of_cluster[f"unknown_cluster_{i}"] for i in range(1, 7))

    out = cli("label-cluster", "unknown_cluster_1", "Alice")
    assert "Alice" in out and "(new person)" in out and f"changed: {IN_LIBRARY}" in out

    # one person labelled: too little to train; the error names the minimum, and the run is still recorded
    line = _one_line_error(*cli.finish(cli.start("train")), run_log=True)
    assert "not enough labels" in line and ">= 2 people with >= 2 labelled faces" in line

    (rc1, persons_out, _), (rc2, alice_out, _) = cli.parallel(("persons",), ("person", "Alice"))
    assert rc1 == rc2 == 0
    assert _people(persons_out) == {"Alice": ("active", IN_LIBRARY)}
    assert "name='Alice'" in alice_out and f"faces={IN_LIBRARY}," in alice_out and "'cluster': 4" in alice_out
    assert all(f in alice_out for f in faces[a])

    # label-face creates a person, label-cluster joins it; a mistaken label-face is fixed with move
    b0, c0 = faces[b][0], faces[c][0]
    (rc1, out_b, err_b), (rc2, out_c, err_c) = cli.parallel(("label-face", b0, "Bob"), ("label-face", c0, "Alice"))
    assert rc1 == rc2 == 0, (err_b, err_c)
    assert "Bob" in out_b and "(new person)" in out_b and "(new person)" not in out_c
    assert f"changed: {IN_LIBRARY - 1}" in cli("label-cluster", "unknown_cluster_2", "Bob")
    out = cli("move", c0, "Carol")
    assert "reassign_face" in out and "Carol" in out and "(new person)" in out
    cli("label-cluster", "unknown_cluster_3", "Carol")
    state = _state(settings)
    assert state[c0][:2] == ("Carol", "manual") and state[b0][:2] == ("Bob", "manual")
    assert [state[f][0] for f in faces[a]] == ["Alice"] * IN_LIBRARY

    # two names for one person, merged into a third; the flag is required
    d0, d1, d2, d3 = faces[d]
    assert all(r[0] == 0 for r in cli.parallel(("label-face", d0, "Dan"), ("label-face", d1, "Daniel")))
    cli("label-cluster", "unknown_cluster_4", "Danny")
    rc, out, err = cli.finish(cli.start("merge", "Dan", "Daniel"))
    assert rc == 2 and "--into" in err and "Traceback" not in err
    out = cli("merge", "Dan", "Daniel", "--into", "Danny")
    assert "merge" in out and "Danny" in out
    people = _people(cli("persons"))
    assert people["Danny"] == ("active", IN_LIBRARY) and "Dan" not in people and "Daniel" not in people
    with session_scope(settings.sql_url) as s:
        merged = {p.name: (p.status, p.merged_into) for p in s.scalars(select(Person).where(Person.name.in_(["Dan", "Daniel", "Danny"])))}
        danny = s.scalar(select(Person.person_id).where(Person.name == "Danny"))
    assert merged["Dan"] == ("merged", danny) and merged["Daniel"] == ("merged", danny)

    # split two faces off into a new person; the flag is required here too
    rc, _, err = cli.finish(cli.start("split", "Danny", d2))
    assert rc == 2 and "--name" in err
    out = cli("split", "Danny", d2, d3, "--name", "Dana")
    assert "Dana" in out and "changed: 2" in out
    people = _people(cli("persons"))
    assert people["Danny"] == ("active", 2) and people["Dana"] == ("active", 2)

    # "not this person": the face leaves Alice, and a full re-organisation does not give it back
    a3 = faces[a][3]
    out = cli("reject", a3)
    assert "reject_face" in out and "Alice" in out
    with session_scope(settings.sql_url) as s:
        alice = s.scalar(select(Person.person_id).where(Person.name == "Alice"))
        assert s.get(FaceRejection, (a3, alice)) is not None
    cli("cluster")
    state = _state(settings)
    assert state[a3][0] != "Alice"
    assert [state[f][0] for f in faces[a][:3]] == ["Alice"] * 3

    # hide / unhide / rename
    cli("hide", "Carol")
    (_, visible, _), (_, everyone, _) = cli.parallel(("persons",), ("persons", "--all"))
    assert "Carol" not in _people(visible) and _people(everyone)["Carol"] == ("hidden", IN_LIBRARY)
    cli("unhide", "Carol")
    out = cli("rename", "Bob", "Robert")
    assert "Robert" in out
    people = _people(cli("persons"))
    assert {"Alice", "Robert", "Carol", "Danny", "Dana"} <= set(people) and "Bob" not in people
    assert people["Carol"] == ("active", IN_LIBRARY)

    # a photo that is not in the library: Alice is recognised, an unnamed person is not
    (rc1, found_a, err1), (rc2, found_e, err2) = cli.parallel(("find", str(lib["new_photo"][a])), ("find", str(lib["new_photo"][e])))
    assert rc1 == rc2 == 0, (err1, err2)
    assert re.search(r"face at .*: Alice \(person_[0-9a-f]{32}\) confidence 0\.\d{3}", found_a), found_a
    assert "unknown" in found_e and "Alice" not in found_e and "Robert" not in found_e
    out = cli("search", str(lib["new_photo"][a]), "--limit", "3")
    hits = re.findall(r"([0-9a-f]{16}_face\d+)\s*[│|]\s*(0\.\d{3})\s*[│|]\s*(\S*)", out)
    assert len(hits) >= 3, out
    top_face, _, top_person = hits[0]
    assert top_face in faces[a] and top_person == "Alice"

    # export: names, clusters and sources for every face
    csv = cli.cwd / "export" / "people.csv"
    assert "wrote" in cli("export", "--out", str(csv))
    frame = pd.read_csv(csv).set_index("face_id")
    state = _state(settings)
    assert set(frame.index) == set(state)
    for fid, (name, source, cluster) in state.items():
        row = frame.loc[fid]
        assert (row["person_name"] if pd.notna(row["person_name"]) else None) == name, fid
        assert (row["assignment_source"] if pd.notna(row["assignment_source"]) else None) == source, fid
        assert row["cluster_id"] == cluster, fid
    assert frame["cluster_id"].notna().all()
    assert frame.loc[faces[a][0], "person_name"] == "Alice" and frame.loc[faces[a][0], "assignment_source"] == "cluster"
    assert frame.loc[c0, "assignment_source"] == "manual"
    assert frame["cluster_id"].str.startswith("unknown_cluster_").any()

    # every run went into the home's Dagster instance
    import dagster as dg

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(cli.home / "dagster_home"))
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs()
            jobs = sorted(r.job_name for r in runs)
            assert jobs == ["ingest_batch", "organize_library", "organize_library", "train_projection"]
            assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
            assert instance.get_latest_materialization_event(dg.AssetKey("unknown_clusters")) is not None


def test_bad_input_is_a_one_line_error(lib):
    cli, a_face = lib["cli"], lib["faces"][lib["names"][0]][0]
    results = cli.parallel(
        ("label-cluster", "unknown_cluster_999", "Zed"),
        ("person", "Nobody"),
        ("label-face", "no_such_face", "Zed"),
        ("merge", "Ghost", "--into", "Alice"),
        ("reject", a_face, "Nobody"),
        ("rename", "Nobody", "Somebody"),
        ("find", str(cli.cwd / "missing.jpg")),
    )
    lines = [_one_line_error(*r) for r in results]
    assert "unknown_cluster_999" in lines[0] and "no faces" in lines[0]
    assert all("Nobody" in line and "no person" in line for line in (lines[1], lines[4], lines[5]))
    assert "no_such_face" in lines[2] and "Ghost" in lines[3] and "missing.jpg" in lines[6]
    assert "Zed" not in cli("persons")  # nothing was created by the failed commands


def test_evaluate_prints_the_table_with_the_baselines(lib):
    rc, out, err = Cli.finish(lib["evaluation"])
    assert rc == 0, err
    assert f"{PEOPLE * IN_LIBRARY} photos" in out and f"{PEOPLE} people (3 known" in out
    rows = {line.split("  ")[0].strip(): line for line in out.splitlines() if re.search(r"\d\.\d{3}\s+\d+\s*$", line)}
    names = list(rows)
    assert len(names) == 4, out
    assert names[0].startswith("face_pipeline (") and names[1].startswith("hdbscan")
    assert names[2].startswith("immich") and names[3].startswith("chinese whispers")
    header = next(line for line in out.splitlines() if line.startswith("method"))
    assert all(col in header for col in ("assignP", "assignR", "purity", "B3 F", "clust"))
    ours = [float(x) for x in rows[names[0]].split()[2:-1]]
    assert ours[0] >= 0.9 and ours[1] >= 0.9  # assignment precision and recall on six easy LFW people
