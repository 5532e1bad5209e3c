"""The Dagster code location: everything under :mod:`face_pipeline.defs`, found by Dagster's defs-folder loader.

Each domain folder (``ingest``, ``organize``, ``training``, ``automation``) holds its assets, checks, jobs,
sensors and schedules beside each other; nothing keeps a hand-made list of them. ``defs/resources.py`` adds the
one resource and the executor. Loaded by ``dg dev`` (``[tool.dg]`` in pyproject.toml), ``dagster dev -m
face_pipeline.definitions`` and the Docker/Kubernetes code servers alike.
"""

from pathlib import Path

import dagster as dg

import face_pipeline.defs
from face_pipeline.settings import disable_telemetry

disable_telemetry()  # before any defs module imports onnxruntime


def _load() -> dg.Definitions:
    """The defs folder as a Dagster project. A source checkout has pyproject.toml's ``[tool.dg]``; an installed
    wheel (a Docker image) does not, so the package folder itself is the project root there."""
    from dagster.components.core.component_tree import ComponentTree

    package_dir = Path(face_pipeline.defs.__file__).resolve().parent.parent
    try:
        return dg.load_from_defs_folder(path_within_project=package_dir)
    except Exception:  # no dg project configuration above an installed package
        return ComponentTree.from_module(defs_module=face_pipeline.defs, project_root=package_dir.parent).build_defs()


defs = _load()
