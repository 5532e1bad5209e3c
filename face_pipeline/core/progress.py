"""Progress of long steps, for whoever shows it (the CLI's progress bar) — without the core knowing who.

Runs execute in the CLI's own process (``execute_in_process``), so a listener registered here by the CLI hears
the progress the assets report, while Dagster's log keeps its own (coarser) lines for the UI.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

Listener = Callable[[str, int, int], None]  # (what, done, total)
_listeners: list[Listener] = []


def report_progress(what: str, done: int, total: int) -> None:
    for listener in list(_listeners):
        try:
            listener(what, done, total)
        except Exception:  # a display problem must never fail the work
            pass


@contextmanager
def progress_listener(listener: Listener) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)
