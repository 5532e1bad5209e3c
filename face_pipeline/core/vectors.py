"""The Qdrant face store: one point per face, id derived from ``face_id``, payload mirrored from SQL.

Local mode (a folder, the embedded default) admits one process at a time, so clients are opened through
:func:`open_vector_client`, which reuses one client per folder inside a process and reports a clear
:class:`VectorStoreBusy` when another process holds the folder. Callers that can wait (label operations) keep
their change in SQL and mark the face ``payload_dirty``; the next pipeline run pushes it (:mod:`sync`).

The raw 512-d vectors live in the collection ``{prefix}faces``. Projected spaces are reached through an alias
(``{prefix}faces_proj`` → ``{prefix}faces_proj_v{N}``) so a re-embedded collection is built beside the live one
and switched atomically. ``prefix`` is ``FACE_LIBRARY`` + ``_`` (empty by default): every name is spelled in
:class:`CollectionNames` only, so two libraries share a Qdrant server without touching each other's collections.

Local mode and a server differ in what this module handles: payload indexes (keyword indexes on the filtered
fields, created on a server; local mode scans and has none) and null payload values. Measured here: local
mode keeps a null written by an upsert but *drops the key* when ``set_payload`` writes null, while a server
stores the null. So a field cleared later (a face un-named) is deleted in both modes (``delete_payload``), readers
use ``payload.get``, and "no person" is asked with :func:`no_person_filter` (``IsEmpty``: null or missing), which
both modes answer alike; an equality match never matches either.
"""

from __future__ import annotations

import re
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from face_pipeline.core.face_state import PAYLOAD_FIELDS  # noqa: F401 (re-exported; the face-state module defines the payload)
from face_pipeline.settings import Settings

# Fixed namespace: the same face_id always maps to the same point id, so writing a face twice overwrites it.
FACE_NAMESPACE = uuid.UUID("6f1f6b8e-2c0e-4f43-9d0b-5d2b8e0f4a11")


# Payload fields that searches and deletes filter on: indexed on a Qdrant server (keyword indexes).
INDEXED_PAYLOAD_FIELDS = ("person_id", "image_id", "batch")


@dataclass(frozen=True)
class CollectionNames:
    """Every Qdrant collection and alias name of one library — the only place they are spelled."""

    prefix: str = ""

    @classmethod
    def for_library(cls, library: str) -> "CollectionNames":
        return cls(f"{library}_" if library else "")

    @classmethod
    def of(cls, settings: Settings) -> "CollectionNames":
        return cls.for_library(settings.library)

    @property
    def faces(self) -> str:
        """The raw 512-d face vectors."""
        return f"{self.prefix}faces"

    @property
    def projected_alias(self) -> str:
        """The alias searches use for the live projected space."""
        return f"{self.prefix}faces_proj"

    def projected_version(self, version: int) -> str:
        """The collection holding head ``version``'s projected vectors."""
        return f"{self.projected_alias}_v{int(version)}"

    def is_projected_version(self, name: str) -> bool:
        """True only for this library's versioned projected collections (never another library's)."""
        return re.fullmatch(re.escape(self.projected_alias) + r"_v\d+", name) is not None


class VectorStoreBusy(RuntimeError):
    """Another process holds the Qdrant local folder (local mode is single-process)."""


def point_id(face_id: str) -> str:
    return str(uuid.uuid5(FACE_NAMESPACE, face_id))


_clients: dict[str, list] = {}  # key -> [client, refcount]
_clients_lock = threading.Lock()


def _client_key(settings: Settings) -> str:
    return settings.qdrant_url or str(settings.qdrant_path)


@contextmanager
def open_vector_client(settings: Settings) -> Iterator["object"]:
    """A QdrantClient for the configured server or local folder, shared within this process."""
    from qdrant_client import QdrantClient

    key = _client_key(settings)
    with _clients_lock:
        entry = _clients.get(key)
        if entry is None:
            if settings.qdrant_url:
                client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=60)
            else:
                Path(settings.qdrant_path).mkdir(parents=True, exist_ok=True)
                try:
                    client = QdrantClient(path=str(settings.qdrant_path))
                except (RuntimeError, BlockingIOError) as exc:  # portalocker raises one of these
                    if "already accessed" in str(exc) or isinstance(exc, BlockingIOError):
                        raise VectorStoreBusy(
                            f"Qdrant folder {settings.qdrant_path} is in use by another process "
                            "(a pipeline run or the CLI); local mode allows one at a time"
                        ) from exc
                    raise
            entry = _clients[key] = [client, 0]
        entry[1] += 1
    try:
        yield entry[0]
    finally:
        with _clients_lock:
            entry[1] -= 1
            if entry[1] == 0:
                _clients.pop(key, None)
                try:
                    entry[0].close()
                except Exception:  # pragma: no cover - closing best effort
                    pass


def _fast_local_writes(client, collection: str) -> None:
    """Qdrant local mode stores every point in its own SQLite transaction, and with SQLite's defaults (rollback
    journal, synchronous=FULL) each one waits for fsync: ~20 ms a point on a busy disk, 8 s for 400 faces, more
    than the embedding itself. WAL + synchronous=NORMAL keeps the file consistent and drops the per-point fsync
    (a power cut may lose the last writes; the vectors are rebuilt from SQL and the embedding files). The face
    SQLite database runs the same way (db.session). No-op for a Qdrant server or an unexpected client layout."""
    import sqlite3

    local = getattr(client, "_client", None)
    coll = getattr(local, "collections", {}).get(collection) if local is not None else None
    conn = getattr(getattr(coll, "storage", None), "storage", None)
    if isinstance(conn, sqlite3.Connection):
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error:  # pragma: no cover - tuning only
            pass


@dataclass
class FaceRecord:
    face_id: str
    vector: np.ndarray
    payload: dict


def is_local(client) -> bool:
    """Qdrant local mode (a folder or ``:memory:``) rather than a server."""
    from qdrant_client.local.qdrant_local import QdrantLocal

    return isinstance(getattr(client, "_client", None), QdrantLocal)


def no_person_filter():
    """Faces nobody is named on: person_id null or missing (the same answer in local mode and on a server)."""
    from qdrant_client import models

    return models.Filter(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="person_id"))])


class FaceVectorStore:
    """Face vectors of one space (``raw`` 512-d or a projected space) behind an alias.

    ``quantization`` ("none" | "int8", FACE_QDRANT_QUANTIZATION) applies to collections this store creates."""

    def __init__(self, client, alias: str = CollectionNames().faces, dim: int = 512, quantization: str = "none"):
        self.client = client
        self.alias = alias
        self.dim = dim
        self.quantization = quantization

    # -- collections & aliases ---------------------------------------------------------------------------------
    def _alias_target(self, alias: str) -> str | None:
        for a in self.client.get_aliases().aliases:
            if a.alias_name == alias:
                return a.collection_name
        return None

    @property
    def collection(self) -> str:
        return self._alias_target(self.alias) or self.alias

    def ensure(self) -> "FaceVectorStore":
        """Create the collection named like the store unless that name (or an alias of it) exists."""
        if not (self._alias_target(self.alias) or self.client.collection_exists(self.alias)):
            self.create_collection(self.alias, self.dim)
        return self

    def exists(self) -> bool:
        return bool(self._alias_target(self.alias) or self.client.collection_exists(self.alias))

    def create_collection(self, name: str, dim: int) -> None:
        from qdrant_client import models

        if self.client.collection_exists(name):
            self.client.delete_collection(name)
        quantization = None
        if self.quantization == "int8":
            # 1 byte per dimension kept in RAM; the float32 originals stay on disk for rescoring.
            quantization = models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
            )
        elif self.quantization != "none":
            raise ValueError(f"unknown quantization {self.quantization!r}: use none or int8")
        self.client.create_collection(
            name,
            vectors_config=models.VectorParams(
                size=dim, distance=models.Distance.COSINE, datatype=models.Datatype.FLOAT32, on_disk=quantization is not None
            ),
            quantization_config=quantization,
        )
        if not is_local(self.client):  # local mode has no payload indexes (it scans)
            for field_name in INDEXED_PAYLOAD_FIELDS:
                self.client.create_payload_index(name, field_name=field_name, field_schema=models.PayloadSchemaType.KEYWORD, wait=True)

    def switch_alias(self, collection: str) -> str | None:
        """Point the alias at ``collection`` in one atomic operation; returns the previous target."""
        from qdrant_client import models

        old = self._alias_target(self.alias)
        ops: list = []
        if old:
            ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.alias)))
        ops.append(models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=self.alias)))
        self.client.update_collection_aliases(change_aliases_operations=ops)
        return old

    def collections_with_prefix(self, prefix: str) -> list[str]:
        return sorted(c.name for c in self.client.get_collections().collections if c.name.startswith(prefix))

    def collection_names(self) -> list[str]:
        return sorted(c.name for c in self.client.get_collections().collections)

    # -- points -----------------------------------------------------------------------------------------------------
    def upsert(self, records: Sequence[FaceRecord], collection: str | None = None, chunk: int = 512) -> int:
        from qdrant_client import models

        target = collection or self.collection
        _fast_local_writes(self.client, target)
        now = datetime.now(timezone.utc).isoformat()
        for i in range(0, len(records), chunk):
            points = [
                models.PointStruct(
                    id=point_id(r.face_id),
                    vector=np.asarray(r.vector, dtype=np.float32).tolist(),
                    payload={"indexed_at": now, **r.payload, "face_id": r.face_id},
                )
                for r in records[i : i + chunk]
            ]
            self.client.upsert(target, points=points, wait=True)
        return len(records)

    def delete(self, face_ids: Iterable[str]) -> None:
        from qdrant_client import models

        ids = [point_id(f) for f in face_ids]
        if ids:
            _fast_local_writes(self.client, self.collection)
            self.client.delete(self.collection, points_selector=models.PointIdsList(points=ids), wait=True)

    def delete_batch(self, batch: str) -> None:
        from qdrant_client import models

        flt = models.Filter(must=[models.FieldCondition(key="batch", match=models.MatchValue(value=batch))])
        _fast_local_writes(self.client, self.collection)
        self.client.delete(self.collection, points_selector=models.FilterSelector(filter=flt), wait=True)

    def set_payloads(self, updates: dict[str, dict]) -> int:
        """Per-face payload changes (e.g. person_id after a label) in one round trip per chunk. A field set to
        ``None`` is deleted, the same in local mode and on a server (see the module docstring)."""
        from qdrant_client import models

        items = list(updates.items())
        if items:
            _fast_local_writes(self.client, self.collection)
        for i in range(0, len(items), 256):
            ops: list = []
            for fid, payload in items[i : i + 256]:
                kept = {k: v for k, v in payload.items() if v is not None}
                cleared = [k for k, v in payload.items() if v is None]
                if kept:
                    ops.append(models.SetPayloadOperation(set_payload=models.SetPayload(payload=kept, points=[point_id(fid)])))
                if cleared:
                    ops.append(models.DeletePayloadOperation(delete_payload=models.DeletePayload(keys=cleared, points=[point_id(fid)])))
            if ops:
                self.client.batch_update_points(self.collection, update_operations=ops, wait=True)
        return len(items)

    def count(self, flt=None) -> int:
        return int(self.client.count(self.collection, count_filter=flt, exact=True).count)

    def iter_records(self, with_vectors: bool = True, page: int = 2048, collection: str | None = None) -> Iterator[FaceRecord]:
        offset = None
        target = collection or self.collection
        while True:
            points, offset = self.client.scroll(target, limit=page, offset=offset, with_payload=True, with_vectors=with_vectors)
            for p in points:
                vec = np.asarray(p.vector, dtype=np.float32) if with_vectors else np.zeros(0, dtype=np.float32)
                yield FaceRecord(face_id=p.payload["face_id"], vector=vec, payload=p.payload)
            if offset is None:
                return

    def load_all(self, collection: str | None = None) -> tuple[list[str], np.ndarray, list[dict]]:
        """Every face id, vector (N,dim) and payload, in a stable order (sorted by face_id)."""
        recs = sorted(self.iter_records(True, collection=collection), key=lambda r: r.face_id)
        if not recs:
            return [], np.zeros((0, self.dim), dtype=np.float32), []
        return [r.face_id for r in recs], np.stack([r.vector for r in recs]), [r.payload for r in recs]

    def vectors_for(self, face_ids: Sequence[str]) -> dict[str, np.ndarray]:
        got = self.client.retrieve(self.collection, ids=[point_id(f) for f in face_ids], with_vectors=True, with_payload=True)
        return {p.payload["face_id"]: np.asarray(p.vector, dtype=np.float32) for p in got}

    def search(self, vector: np.ndarray, limit: int = 10, person_id: str | None = None) -> list[tuple[str, float, dict]]:
        from qdrant_client import models

        flt = None
        if person_id:
            flt = models.Filter(must=[models.FieldCondition(key="person_id", match=models.MatchValue(value=person_id))])
        res = self.client.query_points(self.collection, query=np.asarray(vector, dtype=np.float32).tolist(), limit=limit, query_filter=flt, with_payload=True)
        return [(p.payload["face_id"], float(p.score), p.payload) for p in res.points]
