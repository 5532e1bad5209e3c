"""projection_head (trained on human labels, gated; reports its outcome as a check result) → reembedded_faces
(faces_proj_v{N} behind an atomic alias switch)."""

import base64

import dagster as dg

from face_pipeline.core import heads
from face_pipeline.core.train import TrainingStatus, plot_losses
from face_pipeline.defs.organize.assets import supervised_assignments
from face_pipeline.defs.pools import LIBRARY_POOL
from face_pipeline.defs.resources import FacePipelineResource

GATE_CHECK = "head_not_worse_than_raw"


class TrainingConfig(dg.Config):
    """Overrides of FACE_TRAINING_EPOCHS / _BATCH_SIZE / _LEARNING_RATE, FACE_TRIPLET_MARGIN."""

    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    margin: float | None = None
    seed: int | None = None


def _metrics_table(raw: dict, projected: dict) -> str:
    keys = [k for k in raw if isinstance(raw.get(k), (int, float)) and isinstance(projected.get(k), (int, float))]
    rows = "\n".join(f"| {k} | {raw[k]:.4f} | {projected[k]:.4f} |" for k in keys)
    return f"| measure | raw 512-d | head |\n|---|---|---|\n{rows}"


def _lines(items: list[str]) -> dg.MetadataValue:
    return dg.MetadataValue.md("\n".join(f"- {r}" for r in items))


def outcome_check_result(out: heads.TrainingOutcome) -> dg.AssetCheckResult:
    """The gate's verdict as a check result of the asset that produced (or did not produce) the head.

    ``trained``: passed. ``refused``: failed, severity ERROR - blocking, so the refused head is never re-embedded.
    ``not_enough_labels``: failed, severity WARN - nothing was produced, nothing downstream runs, the run is not
    an error. ``status`` in the metadata is the typed outcome front ends read (never the check's name).
    """
    meta = {
        "status": out.status.value,
        "used_for": out.used_for,
        "reasons": _lines(out.reasons),
        "missing": dg.MetadataValue.json(out.missing),
        "failing": dg.MetadataValue.json(out.failing),
        "use_for_clustering": out.use_for_clustering,
    }
    if out.version is not None:
        meta["version"] = out.version
    severity = dg.AssetCheckSeverity.WARN if out.status is TrainingStatus.NOT_ENOUGH_LABELS else dg.AssetCheckSeverity.ERROR
    return dg.AssetCheckResult(check_name=GATE_CHECK, passed=out.promoted, severity=severity, metadata=meta)


@dg.asset(
    deps=[supervised_assignments],
    group_name="training",
    kinds={"pytorch"},
    pool=LIBRARY_POOL,  # issue 11: library-wide, one at a time (defs/pools.py)
    output_required=False,
    check_specs=[dg.AssetCheckSpec(GATE_CHECK, asset="projection_head", blocking=True,
                                   description="trained / refused by the gate / not enough labels: the head is used only when "
                                               "it names among named people at least as well as raw space, and better somewhere.")],
    description="A residual head on the human labels (and augmented copies), versioned, gated against raw space; "
                "used only to decide among named people.",
)
def projection_head(context: dg.AssetExecutionContext, config: TrainingConfig, face_pipeline: FacePipelineResource):
    settings = face_pipeline.settings()
    cfg = heads.train_config(settings, epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
                             margin=config.margin, seed=config.seed)

    def progress(epoch: int, loss: float) -> None:
        context.log.info(f"epoch {epoch}/{cfg.epochs}: loss {loss:.4f}")

    try:
        models = face_pipeline.models()
    except Exception as exc:  # noqa: BLE001 - no recogniser: train without augmentation, and say so
        context.log.warning(f"no recogniser for augmentation: {exc}")
        models = None
    out = heads.train_and_gate(settings, config=cfg, progress=progress, models=models)
    check = outcome_check_result(out)
    if out.status is TrainingStatus.NOT_ENOUGH_LABELS:
        context.log.warning(f"projection head not trained: {out.reasons[0] if out.reasons else 'not enough labels'}")
        yield check  # an answer, not a failure: no head, so no materialisation and nothing downstream
        return
    png = base64.b64encode(plot_losses(out.losses)).decode()
    yield dg.MaterializeResult(
        metadata={
            "version": out.version,
            "status": out.status.value,
            "promoted": out.promoted,
            "used_for": out.used_for,
            "gate": _lines(out.reasons),
            "validation": dg.MetadataValue.md(_metrics_table(out.raw_metrics, out.projected_metrics)),
            "thresholds": dg.MetadataValue.json(out.thresholds),
            "people": out.people,
            "faces": out.faces,
            "augmented_faces": out.augmented_faces,
            "unlabelled_faces": out.unlabelled_faces,
            "augmentation": out.extra.get("augmentation", ""),
            "epochs": len(out.losses),
            "final_loss": round(out.losses[-1], 5) if out.losses else None,
            "loss_curve": dg.MetadataValue.md(f"![loss](data:image/png;base64,{png})"),
            "device": out.device,
            "checkpoint": dg.MetadataValue.path(out.checkpoint),
            "seconds": round(out.seconds, 2),
        },
        check_results=[check],
    )


@dg.asset(
    deps=[projection_head],
    group_name="training",
    kinds={"qdrant"},
    pool=LIBRARY_POOL,  # issue 11: library-wide, one at a time (defs/pools.py)
    description="Every face through the promoted head into faces_proj_v{N}; alias faces_proj switched atomically.",
)
def reembedded_faces(context: dg.AssetExecutionContext, face_pipeline: FacePipelineResource) -> dg.MaterializeResult:
    settings = face_pipeline.settings()
    with face_pipeline.vector_store() as store:
        rep = heads.reembed_faces(settings, store)
    if rep.skipped:
        context.log.warning(rep.skipped)
    return dg.MaterializeResult(
        metadata={
            "version": rep.version,
            "collection": rep.collection,
            "faces": rep.faces,
            "previous_collection": rep.previous,
            "removed_collections": dg.MetadataValue.json(rep.removed),
            "skipped": rep.skipped or "",
            "seconds": round(rep.seconds, 2),
        }
    )


training_job = dg.define_asset_job(
    "train_projection",
    selection=[projection_head, reembedded_faces],
    description="Train and gate a projection head; re-embed the library when it is promoted.",
    tags={"face_pipeline/exclusive": "true"},
)
