"""Pushing label changes from SQL (the source of truth) into the Qdrant payload.

Label operations change SQL only and mark the faces they touched ``payload_dirty``. Qdrant local mode admits one
process at a time and a pipeline run may hold the folder for minutes, so a label must never wait for (or fail
on) the vector store: :func:`try_sync_payloads` pushes when the store is free and otherwise leaves the faces dirty
for the run, which calls :func:`sync_payloads` at its end.

Why the flag is cleared conditionally: between reading a dirty face and clearing its flag another process may
label it again. The flag is therefore cleared only where the row still holds exactly the values that were
pushed; a face changed in between stays dirty and goes out with the next sync instead of being lost.
"""

from __future__ import annotations

import logging
from sqlalchemy import and_, select, update

from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import FaceInstance
from face_pipeline.core import face_state
from face_pipeline.core.vectors import CollectionNames, FaceVectorStore, VectorStoreBusy, open_vector_client, point_id
from face_pipeline.settings import Settings

log = logging.getLogger(__name__)

# Faces per round trip: bounds memory and keeps each SQL transaction short (other processes write the same file).
_CHUNK = 1000


def _dirty_ids(settings: Settings) -> list[str]:
    """Dirty faces that have a point to update. Faces not embedded yet have no point: ``embed_batch`` writes
    their whole payload from SQL (and clears the flag) when it creates the point."""
    with session_scope(settings.sql_url) as s:
        return list(
            s.scalars(
                select(FaceInstance.face_id)
                .where(FaceInstance.payload_dirty.is_(True), FaceInstance.embedded.is_(True))
                .order_by(FaceInstance.face_id)
            )
        )


def _existing(store: FaceVectorStore, face_ids: list[str]) -> set[str]:
    """Which faces have a point: a payload update naming a missing point fails the whole request (local mode
    raises KeyError, a server answers 404), so those are filtered out first."""
    by_point = {point_id(f): f for f in face_ids}
    got = store.client.retrieve(store.collection, ids=list(by_point), with_payload=False, with_vectors=False)
    return {by_point[str(p.id)] for p in got}


def _stores(settings: Settings, first: FaceVectorStore) -> list[FaceVectorStore]:
    """The given store plus the projected space's alias on the same client when one exists: both carry the same
    payload, and a person filter on either must see the new label."""
    proj = FaceVectorStore(first.client, CollectionNames.of(settings).projected_alias)  # issue 11: names in one place
    out = [first] if first.exists() else []
    if proj.exists() and proj.collection not in {st.collection for st in out}:
        out.append(proj)
    return out


def _sync(settings: Settings, stores: list[FaceVectorStore], face_ids: list[str]) -> int:
    synced = 0
    for i in range(0, len(face_ids), _CHUNK):
        chunk = face_ids[i : i + _CHUNK]
        with session_scope(settings.sql_url) as s:
            rows = list(s.scalars(select(FaceInstance).where(FaceInstance.face_id.in_(chunk), FaceInstance.payload_dirty.is_(True))))
            snapshot = {r.face_id: face_state.payload_snapshot(r) for r in rows}
            payloads = {r.face_id: face_state.payload_of(r) for r in rows}
        if not payloads:
            continue
        for store in stores:
            present = _existing(store, list(payloads))
            if present:
                store.set_payloads({fid: p for fid, p in payloads.items() if fid in present})
        # A face without a point in a store gets its payload from SQL whenever that point is (re)written, so it
        # is clean too. Clear the flag only where the row still matches what was pushed (see module docstring).
        with session_scope(settings.sql_url) as s:
            for fid, values in snapshot.items():
                conds = [getattr(FaceInstance, c).is_not_distinct_from(v) for c, v in values.items()]
                res = s.execute(
                    update(FaceInstance)
                    .where(FaceInstance.face_id == fid, FaceInstance.payload_dirty.is_(True), and_(*conds))
                    # keep updated_at: clearing a bookkeeping flag is not a change of the face
                    .values(payload_dirty=False, updated_at=FaceInstance.updated_at)
                    .execution_options(synchronize_session=False)
                )
                synced += res.rowcount or 0
    return synced


def sync_payloads(settings: Settings, store: FaceVectorStore | None = None) -> int:
    """Push the payload (``face_state.payload_of``: person_id, person_confidence, …) of every ``payload_dirty``
    embedded face to Qdrant and clear the flag; returns how many faces were synced.

    With ``store=None`` the configured client is opened (raising :class:`VectorStoreBusy` when another process
    holds the local folder). The projected alias (``<collection>_proj``), when present, is updated too. When
    nothing is dirty the store is not opened at all, so the common case costs one SQL query.
    """
    face_ids = _dirty_ids(settings)
    if not face_ids:
        return 0
    if store is not None:
        n = _sync(settings, _stores(settings, store), face_ids)
    else:
        with open_vector_client(settings) as client:
            n = _sync(settings, _stores(settings, FaceVectorStore(client, settings.qdrant_collection)), face_ids)
    log.info("synced the Qdrant payload of %d faces", n)
    return n


def try_sync_payloads(settings: Settings) -> int | None:
    """:func:`sync_payloads`, or ``None`` when another process (a pipeline run) holds the Qdrant folder.

    The faces then simply stay dirty: SQL already holds the change and the run syncs at its end.
    """
    try:
        return sync_payloads(settings)
    except VectorStoreBusy as exc:
        log.info("vector store busy, payloads stay dirty until the next sync: %s", exc)
        return None
