"""Read-only views over SQL for people: library statistics and the per-face export table."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd
from sqlalchemy import func, select

from face_pipeline.core import face_state
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import FaceInstance, Person, Photo, PhotoBatch
from face_pipeline.settings import Settings

EXPORT_COLUMNS = [
    "face_id", "image_id", "photo_path", "x1", "y1", "x2", "y2", "det_score", "quality_score", "person_id",
    "person_name", "cluster_id", "person_confidence", "assignment_source",
]


def library_stats(settings: Settings) -> dict[str, Any]:
    with session_scope(settings.sql_url) as s:
        photo_status = dict(Counter(dict(s.execute(select(Photo.status, func.count()).group_by(Photo.status)).all())))
        faces = s.scalar(select(func.count()).select_from(FaceInstance)) or 0
        embedded = s.scalar(select(func.count()).where(FaceInstance.embedded.is_(True))) or 0
        by_source = dict(s.execute(select(FaceInstance.assignment_source, func.count()).group_by(FaceInstance.assignment_source)).all())
        clusters = s.scalar(select(func.count(func.distinct(FaceInstance.cluster_id))).where(face_state.in_unknown_cluster())) or 0
        noise = s.scalar(select(func.count()).where(face_state.in_noise())) or 0
        persons = dict(s.execute(select(Person.status, func.count()).group_by(Person.status)).all())
        batches = s.scalar(select(func.count()).select_from(PhotoBatch)) or 0
    return {
        "batches": batches,
        "photos": sum(photo_status.values()),
        "photos_by_status": photo_status,
        "faces": faces,
        "faces_embedded": embedded,
        "faces_assigned": sum(v for k, v in by_source.items() if k),
        "faces_by_source": {k or "unassigned": v for k, v in by_source.items()},
        "unknown_clusters": clusters,
        "noise_faces": noise,
        "persons": persons,
    }


def export_frame(settings: Settings) -> pd.DataFrame:
    """One row per face with the columns of EXPORT_COLUMNS, sorted by face id."""
    with session_scope(settings.sql_url) as s:
        path_of = {}
        for image_id, path in s.execute(select(Photo.image_id, Photo.path).where(Photo.status == "ok").order_by(Photo.id)):
            path_of.setdefault(image_id, path)
        names = dict(s.execute(select(Person.person_id, Person.name)).all())
        rows = [
            {
                "face_id": f.face_id, "image_id": f.image_id, "photo_path": path_of.get(f.image_id),
                "x1": f.x1, "y1": f.y1, "x2": f.x2, "y2": f.y2, "det_score": f.det_score, "quality_score": f.quality_score,
                "person_id": f.person_id, "person_name": names.get(f.person_id) if f.person_id else None,
                "cluster_id": f.cluster_id, "person_confidence": f.person_confidence, "assignment_source": f.assignment_source,
            }
            for f in s.scalars(select(FaceInstance).order_by(FaceInstance.face_id))
        ]
    return pd.DataFrame(rows, columns=EXPORT_COLUMNS)


def unknown_cluster_of_hits(settings: Settings, hits) -> dict[int, tuple[str, float]]:
    """For nearest-face search hits (query_face_index, face_id, score): query face → (unknown cluster, score) of its
    best hit that sits in an unknown cluster, when the score reaches the clustering threshold — the cluster the
    face would join. Faces nearest to a named person or to noise get no cluster."""
    wanted = sorted({h.face_id for h in hits})
    if not wanted:
        return {}
    with session_scope(settings.sql_url) as s:
        cluster_of = dict(s.execute(select(FaceInstance.face_id, FaceInstance.cluster_id).where(
            FaceInstance.face_id.in_(wanted), FaceInstance.person_id.is_(None), face_state.in_unknown_cluster())).all())
    out: dict[int, tuple[str, float]] = {}
    for h in sorted(hits, key=lambda h: -h.score):
        if h.query_face_index not in out and h.face_id in cluster_of and h.score >= settings.unknown_threshold:
            out[h.query_face_index] = (cluster_of[h.face_id], float(h.score))
    return out


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot run as spreadsheet formulas (CSV injection, OWASP): a text cell starting with
    ``= + - @``, tab or carriage return gets a leading ``'``, which spreadsheets show as text. Numbers stay numbers
    (a negative box coordinate is a float, not text)."""
    out = frame.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]):  # object or pandas' string dtype
            out[col] = out[col].map(lambda v: f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_PREFIXES) else v)
    return out
