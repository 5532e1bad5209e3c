"""``face-pipeline suggestions``: the questions organise asks instead of guessing a name, and their answers.

    face-pipeline suggestions list [--kind K] [--status S] [--limit N]
    face-pipeline suggestions accept ID [--name NAME]
    face-pipeline suggestions reject ID

Answers go through the label operations (:mod:`face_pipeline.core.suggestions`), logged with actor ``cli``.
Errors are the core's typed errors; the console script's entry point prints them as one line and exits 1.
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

ACTOR = "cli"

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Questions the pipeline asks instead of guessing a name: list them, answer yes or no.")


def _settings():
    from face_pipeline.cli import _settings as prepared

    return prepared()


def _console():
    from face_pipeline.cli import console

    return console


def _faces(faces, total: int, shown: int = 3) -> str:
    ids = [f.face_id for f in faces if not f.settled][:shown]
    more = total - len(ids)
    return ", ".join(ids) + (f" (+{more})" if more > 0 else "")


@app.command("list")
def list_(kind: Optional[str] = typer.Option(None, "--kind", help="face_is_person, cluster_is_person, check_names or same_person."),
          status: str = typer.Option("open", "--status", help="open, accepted, rejected, stale or all."),
          limit: int = typer.Option(50, "--limit", min=0), offset: int = typer.Option(0, "--offset", min=0)) -> None:
    """List suggestions, the answers that settle most faces first."""
    from face_pipeline.core import suggestions

    settings = _settings()
    rows = suggestions.list_suggestions(settings, kind=kind, status=status, limit=limit, offset=offset)
    total = suggestions.count_suggestions(settings, kind=kind, status=status)
    console = _console()
    if not rows:
        console.print(f"no {'' if status == 'all' else status + ' '}suggestions", highlight=False)
        return
    table = Table("id", "question", "faces", "candidate", "score / bar", "priority", "status")
    for r in rows:
        candidate = " ⇄ ".join(f"{escape(p.name or '(deleted)')} ({p.person_id})" for p in (r.person, r.other_person) if p)
        faces = _faces(r.faces, r.face_count)
        if r.other_face_count:
            faces += " ⇄ " + _faces(r.other_faces, r.other_face_count)
        table.add_row(str(r.id), escape(r.question), faces, candidate, f"{r.score:.3f} / {r.bar:.3f}", f"{r.priority:.2f}", r.status)
    console.print(table)
    if total > offset + len(rows):
        console.print(f"… {total - offset - len(rows)} more (--offset {offset + len(rows)})", highlight=False)


def _done(result) -> None:
    """One line: what the answer did (names printed as text, never as markup)."""
    who = f" → {result.name} ({result.person_id})" if result.person_id else ""
    parts = [f"{k}: {len(v)}" for k, v in (("changed", result.changed), ("unchanged", result.unchanged),
                                           ("skipped (human label)", result.skipped), ("skipped (rejected)", result.rejected),
                                           ("same-photo conflicts", result.conflicts), ("unassigned", result.unassigned)) if v]
    sync = "vector store follows at the next pipeline run" if result.synced is None else f"{result.synced} synced to Qdrant"
    _console().print(f"{result.action}{who}{' (new person)' if result.created else ''}: {', '.join(parts) or 'nothing to change'}; "
                     f"{result.events} events; {sync}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def accept(suggestion_id: int = typer.Argument(..., help="The id `suggestions list` shows."),
           name: Optional[str] = typer.Option(None, "--name", help="For two unnamed groups: name them; for two people: who the merge keeps.")) -> None:
    """Answer yes: label the faces as the person, merge the two people, or link the two groups."""
    from face_pipeline.core import suggestions

    _done(suggestions.accept_suggestion(_settings(), suggestion_id, actor=ACTOR, name=name))


@app.command()
def reject(suggestion_id: int = typer.Argument(..., help="The id `suggestions list` shows.")) -> None:
    """Answer no: "not this person" (or "different people"); it is never proposed again."""
    from face_pipeline.core import suggestions

    _done(suggestions.reject_suggestion(_settings(), suggestion_id, actor=ACTOR))


def register(root: typer.Typer) -> None:
    """Add the ``suggestions`` group to the ``face-pipeline`` command."""
    root.add_typer(app, name="suggestions")
