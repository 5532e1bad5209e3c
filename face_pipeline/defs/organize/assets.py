"""supervised_assignments → unknown_clusters (library-wide, unpartitioned), with their checks."""

import base64

import dagster as dg

from face_pipeline.core import organize
from face_pipeline.core.consistency import vector_store_disagreements
from face_pipeline.core.doctor import diagnose, require_ready
from face_pipeline.core.faults import fault_point
from face_pipeline.core.sync import sync_payloads
from face_pipeline.defs.ingest.assets import face_embeddings
from face_pipeline.defs.pools import LIBRARY_POOL
from face_pipeline.defs.resources import FacePipelineResource


class OrganizeConfig(dg.Config):
    """Per-run overrides of the settings (the CLI's --person-threshold / --unknown-method / --unknown-min-size)."""

    person_threshold: float | None = None
    unknown_method: str | None = None
    unknown_min_size: int | None = None
    unknown_threshold: float | None = None
    use_trained_model: bool = False


def _trained_head(face_pipeline: FacePipelineResource, config: OrganizeConfig):
    """The promoted head for ``use_trained_model`` (NoPromotedHead when there is none), else None.

    Naming stays in raw space and the head only decides among named people (naming rule 8)."""
    if not config.use_trained_model:
        return None
    from face_pipeline.core.heads import NoPromotedHead, live_named_head

    head = live_named_head(face_pipeline.settings())
    if head is None:
        raise NoPromotedHead("no promoted projection head: run `face-pipeline train` (and the gate must pass) first")
    return head


def _cluster_space(face_pipeline: FacePipelineResource, config: OrganizeConfig):
    """(projector or None, space name, link threshold or None) for unknown clustering: the head's space only when
    its gate judged it better for people it never saw (``use_for_clustering``), raw space otherwise."""
    head = _trained_head(face_pipeline, config)
    if head is None or not head.use_for_clustering:
        return None, "raw", config.unknown_threshold
    from face_pipeline.core.heads import live_projector

    project, space, calibrated = live_projector(face_pipeline.settings())
    return project, space, config.unknown_threshold if config.unknown_threshold is not None else calibrated.get("cluster")


@dg.asset(
    deps=[face_embeddings],
    group_name="organize",
    kinds={"python", "sql"},
    pool=LIBRARY_POOL,  # issue 11: library-wide, one at a time (defs/pools.py)
    description="Faces of named people assigned automatically (with confidence and margin); human labels never change.",
)
def supervised_assignments(context: dg.AssetExecutionContext, config: OrganizeConfig, face_pipeline: FacePipelineResource) -> dg.MaterializeResult:
    settings = face_pipeline.settings()
    require_ready(settings)  # a missing or broken embedding file would organise part of the library, silently
    head = _trained_head(face_pipeline, config)
    space = "raw" if head is None else f"raw, head v{head.version} among named people"
    rep = organize.supervised_assignment(settings, threshold=config.person_threshold, head=head)
    with face_pipeline.vector_store() as store:
        synced = sync_payloads(settings, store)
    context.log.info(f"{rep.newly_assigned} faces newly assigned; {rep.assigned} assigned automatically in all, "
                     f"{rep.human_labelled} labelled by people, {rep.persons} people (threshold {rep.threshold}, space {space})")
    return dg.MaterializeResult(
        metadata={
            "faces": int(rep.faces),
            "human_labelled": int(rep.human_labelled),
            "persons": int(rep.persons),
            "auto_assigned": int(rep.assigned),
            "newly_assigned": int(rep.newly_assigned),
            "unassigned_again": int(rep.unassigned_again),
            "changed_person": int(rep.changed_person),
            "mean_confidence": round(rep.mean_confidence, 4),
            "threshold": rep.threshold,
            "space": space,
            "qdrant_payloads_synced": synced,
            "seconds": round(rep.seconds, 2),
        }
    )


@dg.asset_check(asset=supervised_assignments, blocking=True, description="No person holds two faces of one photo.")
def no_person_twice_in_a_photo(face_pipeline: FacePipelineResource) -> dg.AssetCheckResult:
    conflicts = organize.same_photo_conflicts(face_pipeline.settings())
    return dg.AssetCheckResult(
        passed=not conflicts,
        metadata={"conflicts": len(conflicts), "examples": dg.MetadataValue.json([list(c) for c in conflicts[:10]])},
    )


def _histogram_table(bins: dict[str, int]) -> str:
    """Bins in their own order (a JSON object is shown sorted by key: "11-50" before "2"), counts as integers."""
    rows = "\n".join(f"| {k} | {int(v)} |" for k, v in bins.items())
    return f"| faces per cluster | clusters |\n|---|---|\n{rows}"


@dg.asset(
    deps=[supervised_assignments],
    group_name="organize",
    kinds={"python", "sql"},
    pool=LIBRARY_POOL,  # issue 11: library-wide, one at a time (defs/pools.py)
    description="Faces nobody holds, grouped into stable unknown_cluster_N ids ready to be named; the rest is noise.",
)
def unknown_clusters(context: dg.AssetExecutionContext, config: OrganizeConfig, face_pipeline: FacePipelineResource) -> dg.MaterializeResult:
    fault_point("organize")  # test hook (core/faults.py): inert unless FACE_FAULT_POINT=organize
    settings = face_pipeline.settings()
    project, space, threshold = _cluster_space(face_pipeline, config)
    rep = organize.cluster_unknown(
        settings, method=config.unknown_method, min_size=config.unknown_min_size, threshold=threshold, project=project
    )
    with face_pipeline.vector_store() as store:
        sync_payloads(settings, store)
    png = base64.b64encode(organize.cluster_size_plot(rep.sizes)).decode()
    context.log.info(f"{rep.clusters} clusters, {rep.noise} noise faces of {rep.unknown_faces} unknown ({rep.method})")
    return dg.MaterializeResult(
        metadata={
            "method": rep.method,
            "space": space,
            "unknown_faces": int(rep.unknown_faces),
            "clusters": int(rep.clusters),
            "clustered_faces": int(rep.clustered_faces),
            "noise_faces": int(rep.noise),
            "cluster_ids_kept": int(rep.kept_ids),
            "cluster_ids_new": int(rep.new_ids),
            "largest_cluster": rep.sizes[0] if rep.sizes else 0,
            "size_histogram": dg.MetadataValue.md(_histogram_table(rep.size_histogram())),
            "size_plot": dg.MetadataValue.md(f"![cluster sizes](data:image/png;base64,{png})"),
            "seconds": round(rep.seconds, 2),
        }
    )


@dg.asset_check(asset=unknown_clusters, description="SQL and Qdrant agree on which faces exist and who they are.")
def sql_and_qdrant_agree(face_pipeline: FacePipelineResource) -> dg.AssetCheckResult:
    settings = face_pipeline.settings()
    with face_pipeline.vector_store() as store:
        report = vector_store_disagreements(settings, store)
    return dg.AssetCheckResult(passed=report.agree, metadata=report.as_metadata())


@dg.asset_check(asset=unknown_clusters, blocking=True, description="The doctor: SQL, the embedding files and the vector store agree "
                "(ids, counts, a sample of vectors); fix with `face-pipeline doctor --repair`.")
def library_copies_agree(face_pipeline: FacePipelineResource) -> dg.AssetCheckResult:
    settings = face_pipeline.settings()
    with face_pipeline.vector_store() as store:
        report = diagnose(settings, store)
    return dg.AssetCheckResult(passed=report.healthy, severity=dg.AssetCheckSeverity.ERROR, metadata=report.as_metadata())


organize_job = dg.define_asset_job(
    "organize_library",
    selection=[supervised_assignments, unknown_clusters],
    description="Re-assign known people and re-cluster unknown faces over the whole library.",
    tags={"face_pipeline/exclusive": "true"},
)
