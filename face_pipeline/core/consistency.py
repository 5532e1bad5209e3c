"""Does Qdrant agree with SQL? (SQL is the source of truth; Qdrant follows it.)"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import FaceInstance
from face_pipeline.core.vectors import FaceVectorStore
from face_pipeline.settings import Settings


@dataclass
class Disagreements:
    sql_faces: int = 0
    qdrant_points: int = 0
    missing_in_qdrant: list[str] = field(default_factory=list)
    extra_in_qdrant: list[str] = field(default_factory=list)
    person_mismatch: list[str] = field(default_factory=list)
    pending_sync: int = 0

    @property
    def agree(self) -> bool:
        return not (self.missing_in_qdrant or self.extra_in_qdrant or self.person_mismatch)

    def as_metadata(self) -> dict:
        return {
            "sql_embedded_faces": self.sql_faces,
            "qdrant_points": self.qdrant_points,
            "missing_in_qdrant": len(self.missing_in_qdrant),
            "extra_in_qdrant": len(self.extra_in_qdrant),
            "person_id_mismatch": len(self.person_mismatch),
            "pending_payload_sync": self.pending_sync,
            "examples": (self.missing_in_qdrant + self.extra_in_qdrant + self.person_mismatch)[:10],
        }


def vector_store_disagreements(settings: Settings, store: FaceVectorStore) -> Disagreements:
    """Compare embedded faces in SQL with the points in Qdrant: existence and person_id payload."""
    with session_scope(settings.sql_url) as s:
        sql = {fid: (pid, dirty) for fid, pid, dirty in s.execute(
            select(FaceInstance.face_id, FaceInstance.person_id, FaceInstance.payload_dirty).where(FaceInstance.embedded.is_(True)))}
    points = {r.face_id: r.payload.get("person_id") for r in store.iter_records(with_vectors=False)} if store.exists() else {}
    out = Disagreements(sql_faces=len(sql), qdrant_points=len(points))
    out.missing_in_qdrant = sorted(set(sql) - set(points))
    out.extra_in_qdrant = sorted(set(points) - set(sql))
    # dirty faces wait for the run's payload push (label operations write SQL only): pending, not disagreement
    out.person_mismatch = sorted(f for f in set(sql) & set(points) if sql[f][0] != points[f] and not sql[f][1])
    out.pending_sync = sum(1 for _, dirty in sql.values() if dirty)
    return out
