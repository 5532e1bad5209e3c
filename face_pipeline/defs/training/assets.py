"""projection_head (trained, gated) → reembedded_faces (faces_proj_v{N} behind an atomic alias switch)."""

import base64

import dagster as dg

from face_pipeline.core import heads
from face_pipeline.core.train import NotEnoughLabels, plot_losses
from face_pipeline.defs.organize.assets import supervised_assignments
from face_pipeline.defs.pools import LIBRARY_POOL
from face_pipeline.defs.resources import FacePipelineResource


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
    return f"| measure | raw 512-d | projected |\n|---|---|---|\n{rows}"


@dg.asset(
    deps=[supervised_assignments],
    group_name="training",
    kinds={"pytorch"},
    pool=LIBRARY_POOL,  # issue 11: library-wide, one at a time (defs/pools.py)
    output_required=False,
    description="A triplet-trained projection head (512→256→128) on the human labels, versioned, gated against raw space.",
)
def projection_head(context: dg.AssetExecutionContext, config: TrainingConfig, face_pipeline: FacePipelineResource):
    settings = face_pipeline.settings()
    cfg = heads.train_config(settings, epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate,
                             margin=config.margin, seed=config.seed)

    def progress(epoch: int, loss: float) -> None:
        context.log.info(f"epoch {epoch}/{cfg.epochs}: triplet loss {loss:.4f}")

    try:
        out = heads.train_and_gate(settings, config=cfg, progress=progress)
    except NotEnoughLabels as exc:
        context.log.warning(f"projection head not trained: {exc}")
        return  # a skipped materialisation, not a failure
    png = base64.b64encode(plot_losses(out.losses)).decode()
    yield dg.MaterializeResult(
        metadata={
            "version": out.version,
            "promoted": out.promoted,
            "gate": dg.MetadataValue.md("\n".join(f"- {r}" for r in out.reasons)),
            "validation": dg.MetadataValue.md(_metrics_table(out.raw_metrics, out.projected_metrics)),
            "thresholds": dg.MetadataValue.json(out.thresholds),
            "people": out.people,
            "faces": out.faces,
            "epochs": len(out.losses),
            "final_loss": round(out.losses[-1], 5) if out.losses else None,
            "loss_curve": dg.MetadataValue.md(f"![loss](data:image/png;base64,{png})"),
            "triplets_per_s": round(out.triplets_per_second, 1),
            "device": out.device,
            "checkpoint": dg.MetadataValue.path(out.checkpoint),
            "seconds": round(out.seconds, 2),
        }
    )


@dg.asset_check(asset=projection_head, blocking=True,
                description="The newest head is promoted only when it is not worse than raw 512-d space on held-out faces.")
def head_not_worse_than_raw(face_pipeline: FacePipelineResource) -> dg.AssetCheckResult:
    settings = face_pipeline.settings()
    from sqlalchemy import select

    from face_pipeline.core.db import session_scope
    from face_pipeline.core.db.schema import ProjectionHead

    with session_scope(settings.sql_url) as s:
        head = s.scalars(select(ProjectionHead).order_by(ProjectionHead.version.desc())).first()
        if head is None:
            return dg.AssetCheckResult(passed=False, metadata={"reason": "no head trained yet"})
        reasons = (head.metrics or {}).get("reasons", [])
        return dg.AssetCheckResult(passed=bool(head.promoted), metadata={"version": head.version, "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in reasons))})


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
