"""projection_head → reembedded_faces and the blocking gate check head_not_worse_than_raw, run by a real Dagster
test instance on the six-person faces_dev library of test_organize_assets (real embeddings, real torch training)."""

from __future__ import annotations

import base64
import json
import logging
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

CHECK_STEP = "projection_head_head_not_worse_than_raw"


@pytest.fixture(scope="module")
def lib(tmp_path_factory, faces_dev, models):
    return shared_library(tmp_path_factory, faces_dev, models)


@pytest.fixture
def settings(lib, fast_tmp, monkeypatch) -> Settings:
    return library_home(lib, fast_tmp, monkeypatch)


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


def test_too_few_labels_is_a_skipped_materialisation_not_a_failure(lib, settings, dagster_instance):
    label(settings, lib, 3, lib.names[:1])  # one person: no triplet possible
    result = _train(dagster_instance, settings)

    assert result.success
    assert result.asset_materializations_for_node("projection_head") == []
    assert result.asset_materializations_for_node("reembedded_faces") == []
    assert result.get_asset_check_evaluations() == []  # nothing to judge
    skipped = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_SKIPPED}
    assert {"reembedded_faces", CHECK_STEP} <= skipped
    warnings = [r.user_message for r in dagster_instance.all_logs(result.run_id) if r.level == logging.WARNING]
    assert any("not enough labels" in m and f">= {settings.training_min_people} people" in m for m in warnings), warnings
    assert _heads(settings) == []
    assert not list((settings.artifacts_dir / "heads").glob("*.pt"))
    assert dagster_instance.get_latest_materialization_event(dg.AssetKey("projection_head")) is None


def test_enough_labels_train_a_versioned_head_that_the_gate_judges(lib, settings, dagster_instance):
    label(settings, lib, 3, lib.names)  # 6 people x 3 labelled faces
    result = _train(dagster_instance, settings, epochs=8)

    meta = metadata(result, "projection_head")
    assert meta["version"] == 1 and isinstance(meta["promoted"], bool) and meta["epochs"] == 8
    assert meta["people"] >= 2 and meta["faces"] >= 4
    gate = [line for line in meta["gate"].splitlines() if line.startswith("- ")]
    assert gate and any("precision" in line for line in gate)
    assert meta["validation"].startswith("| measure | raw 512-d | projected |")
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

    # the gate check's verdict is the head's promoted flag, and it blocks the re-embedding when it fails
    (verdict,) = result.get_asset_check_evaluations()
    assert verdict.check_name == "head_not_worse_than_raw" and verdict.passed == meta["promoted"]
    assert verdict.metadata["version"].value == 1
    assert verdict.metadata["reasons"].value == meta["gate"]
    reembedded = result.asset_materializations_for_node("reembedded_faces")
    with open_vector_client(settings) as client:
        proj = FaceVectorStore(client, PROJ_ALIAS, dim=128)
        proj_exists, proj_count = proj.exists(), (proj.count() if proj.exists() else 0)
        faces = FaceVectorStore(client, settings.qdrant_collection).count()
    if meta["promoted"]:
        assert result.success and len(reembedded) == 1
        re = {k: v.value for k, v in reembedded[0].metadata.items()}
        assert re["version"] == 1 and re["collection"] == f"{PROJ_ALIAS}_v1" and re["skipped"] == ""
        assert re["faces"] == faces == proj_count and proj_exists
        assert _heads(settings)[0].live
    else:
        assert reembedded == [] and not proj_exists
        assert not result.success and _failed_steps(result) == {CHECK_STEP}  # only the gate said no
        assert not _heads(settings)[0].live

    # a later run is the next version, beside the first
    second = _train(dagster_instance, settings, epochs=2, seed=1)
    assert metadata(second, "projection_head")["version"] == 2
    assert (heads_dir / "face_projection_w600k_mbf_v2.pt").is_file() and (heads_dir / "face_projection_w600k_mbf_v2.json").is_file()
    assert checkpoint.is_file() and [h.version for h in _heads(settings)] == [1, 2]
    (verdict2,) = second.get_asset_check_evaluations()
    assert verdict2.passed == _heads(settings)[1].promoted and verdict2.metadata["version"].value == 2


def test_reembedding_without_a_promoted_head_reports_skipped(lib, settings, dagster_instance):
    result = dg.materialize([reembedded_faces], instance=dagster_instance, resources=resources(settings))
    assert result.success
    meta = metadata(result, "reembedded_faces")
    assert "no promoted projection head" in meta["skipped"] and meta["faces"] == 0 and meta["collection"] is None
    with session_scope(settings.sql_url) as s:
        assert s.scalar(select(func.count()).select_from(ProjectionHead)) == 0
