"""projection_head → reembedded_faces, with the training outcome reported as projection_head's own check result
(head_not_worse_than_raw: trained / refused / not_enough_labels), run by a real Dagster test instance on the
six-person faces_dev library of test_organize_assets (real embeddings, real augmented crops, real torch training),
and the ``face-pipeline train`` command printing that outcome."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select

from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import ProjectionHead
from face_pipeline.core.heads import PROJ_ALIAS
from face_pipeline.core.vectors import FaceVectorStore, open_vector_client
from face_pipeline.definitions import defs
from face_pipeline.defs.training.assets import reembedded_faces
from face_pipeline.settings import Settings
from face_pipeline_tests.defs.test_organize_assets import label, library_home, metadata, resources, shared_library

CLI = Path(sys.executable).parent / "face-pipeline"


@pytest.fixture(scope="module")
def lib(tmp_path_factory, faces_dev, models):
    return shared_library(tmp_path_factory, faces_dev, models)


@pytest.fixture
def settings(lib, fast_tmp, monkeypatch) -> Settings:
    return library_home(lib, fast_tmp, monkeypatch)


def judge_small_libraries(monkeypatch) -> None:
    """The library has 6 people x 4 photos: too few held-out faces for the gate's default minimum (10). Lower it
    (through the environment, as a user would) so these tests reach the trained/refused outcomes."""
    monkeypatch.setenv("FACE_TRAINING_GATE_MIN_TEST_FACES", "3")


def _outcome(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (ev,) = [e for e in result.get_asset_check_evaluations() if e.asset_key == dg.AssetKey("projection_head")]
    assert ev.check_name == "head_not_worse_than_raw"
    return ev


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["FACE_PIPELINE_HOME"] = str(settings.home_dir)
    return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=600)


def _train(instance, settings: Settings, **config) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def("train_projection").execute_in_process(
        instance=instance, resources=resources(settings), raise_on_error=False,
        run_config={"ops": {"projection_head": {"config": config}}},
    )


def _heads(settings: Settings) -> list[ProjectionHead]:
    with session_scope(settings.sql_url) as s:
        return list(s.scalars(select(ProjectionHead).order_by(ProjectionHead.version)))


def _failed_steps(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.step_key for e in result.all_events if e.is_step_failure}


def test_too_few_labels_is_a_check_result_not_a_failure(lib, settings, dagster_instance):
    label(settings, lib, 3, lib.names[:1])  # one person: nothing to train, nothing to judge
    result = _train(dagster_instance, settings)

    assert result.success
    assert result.asset_materializations_for_node("projection_head") == []
    assert result.asset_materializations_for_node("reembedded_faces") == []
    ev = _outcome(result)  # reported by the asset that would have produced the head
    meta = {k: v.value for k, v in ev.metadata.items()}
    assert ev.passed is False and ev.severity == dg.AssetCheckSeverity.WARN
    assert meta["status"] == "not_enough_labels" and meta["missing"] and meta["used_for"].startswith("nothing")
    assert any(">= 2 labelled faces" in m for m in meta["missing"]), meta["missing"]
    warnings = [r.user_message for r in dagster_instance.all_logs(result.run_id) if r.level == logging.WARNING]
    assert any("not enough labels" in m for m in warnings), warnings
    assert _heads(settings) == []
    assert not list((settings.artifacts_dir / "heads").glob("*.pt"))
    assert dagster_instance.get_latest_materialization_event(dg.AssetKey("projection_head")) is None


def test_three_labels_each_are_not_enough_to_judge_by_default(lib, settings, dagster_instance):
    label(settings, lib, 3, lib.names)  # 6 people x 3: the held-out faces are too few for the default minimum
    result = _train(dagster_instance, settings, epochs=2)
    meta = {k: v.value for k, v in _outcome(result).metadata.items()}
    assert result.success and meta["status"] == "not_enough_labels"
    assert any("held-out labelled faces" in m for m in meta["missing"]), meta["missing"]
    assert _heads(settings) == []


def test_enough_labels_train_a_versioned_head_that_the_gate_judges(lib, settings, dagster_instance, monkeypatch):
    judge_small_libraries(monkeypatch)
    label(settings, lib, 4, lib.names)  # 6 people x 4 labelled faces
    result = _train(dagster_instance, settings, epochs=8)

    meta = metadata(result, "projection_head")
    assert meta["version"] == 1 and isinstance(meta["promoted"], bool) and meta["epochs"] == 8
    assert meta["status"] in ("trained", "refused") and meta["promoted"] == (meta["status"] == "trained")
    assert meta["people"] >= 2 and meta["faces"] >= 4
    assert meta["augmented_faces"] == 4 * meta["faces"]  # flip, zoom, blur, flip+blur of each training label crop
    assert meta["unlabelled_faces"] > 0
    gate = [line for line in meta["gate"].splitlines() if line.startswith("- ")]
    assert gate and any("strangers named" in line for line in gate) and any("precision" in line for line in gate)
    assert meta["validation"].startswith("| measure | raw 512-d | head |")
    assert set(meta["thresholds"]) == {"raw", "projected"}
    assert meta["thresholds"]["raw"]["assign"] == pytest.approx(settings.person_match_threshold)
    loss_png = meta["loss_curve"].split("base64,", 1)[1].rstrip(")")
    assert base64.b64decode(loss_png).startswith(b"\x89PNG")
    assert meta["final_loss"] is not None and meta["final_loss"] >= 0

    heads_dir = settings.artifacts_dir / "heads"
    checkpoint, sidecar = heads_dir / "face_projection_w600k_mbf_v1.pt", heads_dir / "face_projection_w600k_mbf_v1.json"
    assert Path(meta["checkpoint"]) == checkpoint and checkpoint.is_file() and checkpoint.stat().st_size > 0
    assert json.loads(sidecar.read_text())["promoted"] == meta["promoted"]
    (head,) = _heads(settings)
    assert head.version == 1 and head.promoted == meta["promoted"] and Path(head.path) == checkpoint

    # the outcome is the asset's own check result; a refusal blocks the re-embedding
    verdict = _outcome(result)
    vmeta = {k: v.value for k, v in verdict.metadata.items()}
    assert verdict.passed == meta["promoted"] and vmeta["status"] == meta["status"] and vmeta["version"] == 1
    assert vmeta["reasons"] == meta["gate"] and vmeta["used_for"] == meta["used_for"]
    reembedded = result.asset_materializations_for_node("reembedded_faces")
    with open_vector_client(settings) as client:
        proj = FaceVectorStore(client, PROJ_ALIAS, dim=512)
        proj_exists, proj_count = proj.exists(), (proj.count() if proj.exists() else 0)
        faces = FaceVectorStore(client, settings.qdrant_collection).count()
    if meta["promoted"]:
        assert result.success and len(reembedded) == 1
        re = {k: v.value for k, v in reembedded[0].metadata.items()}
        assert re["version"] == 1 and re["collection"] == f"{PROJ_ALIAS}_v1" and re["skipped"] == ""
        assert re["faces"] == faces == proj_count and proj_exists
        assert _heads(settings)[0].live
    else:
        assert vmeta["failing"] and verdict.severity == dg.AssetCheckSeverity.ERROR
        assert reembedded == [] and not proj_exists
        assert not result.success and _failed_steps(result) == {"projection_head"}  # only the gate said no
        assert not _heads(settings)[0].live

    # a later run is the next version, beside the first
    second = _train(dagster_instance, settings, epochs=2, seed=1)
    assert metadata(second, "projection_head")["version"] == 2
    assert (heads_dir / "face_projection_w600k_mbf_v2.pt").is_file() and (heads_dir / "face_projection_w600k_mbf_v2.json").is_file()
    assert checkpoint.is_file() and [h.version for h in _heads(settings)] == [1, 2]
    verdict2 = _outcome(second)
    assert verdict2.passed == _heads(settings)[1].promoted and verdict2.metadata["version"].value == 2


def test_cli_train_prints_the_outcome_and_exits_0(lib, settings, monkeypatch):
    label(settings, lib, 3, lib.names[:1])
    done = _cli(settings, "train", "--epochs", "2")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "no head trained: not enough labels" in done.stdout
    assert "missing:" in done.stdout and "the trained space is used for: nothing" in done.stdout

    judge_small_libraries(monkeypatch)
    label(settings, lib, 4, lib.names)
    done = _cli(settings, "train", "--epochs", "2")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert ("projection head v1: trained and promoted" in done.stdout
            or "projection head v1: trained, REFUSED by the gate" in done.stdout), done.stdout
    assert "the trained space is used for:" in done.stdout and "Traceback" not in done.stderr


def test_reembedding_without_a_promoted_head_reports_skipped(lib, settings, dagster_instance):
    result = dg.materialize([reembedded_faces], instance=dagster_instance, resources=resources(settings))
    assert result.success
    meta = metadata(result, "reembedded_faces")
    assert "no promoted projection head" in meta["skipped"] and meta["faces"] == 0 and meta["collection"] is None
    with session_scope(settings.sql_url) as s:
        assert s.scalar(select(func.count()).select_from(ProjectionHead)) == 0
