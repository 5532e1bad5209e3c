"""Who is in a photo that is not (necessarily) in the library: ``find_person`` and ``search``.

Detects and embeds the photo's faces with the shared models of this process, then matches them against the
people (human-labelled evidence only) or the nearest library faces. Reads only: nothing here changes a label.
``search`` asks the vector store and falls back to the embedding files when another process holds the local
Qdrant folder, so a web page or CLI never waits for a pipeline run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from sqlalchemy import select

from face_pipeline.core import face_state
from face_pipeline.core.assign import assign_faces
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import PERSON_ACTIVE, Person
from face_pipeline.core.embedding_files import load_embeddings
from face_pipeline.core.errors import InvalidInput
from face_pipeline.core.labels.evidence import human_prototypes
from face_pipeline.core.labels.results import finite_or_none, FaceMatch, SearchHit
from face_pipeline.core.models import FaceModels, l2_normalize, shared_models
from face_pipeline.core.photos import PhotoError, load_photo
from face_pipeline.core.vectors import FaceVectorStore, VectorStoreBusy, open_vector_client
from face_pipeline.settings import Settings

log = logging.getLogger(__name__)




def embed_photo(settings: Settings, image_path: str | Path, models: FaceModels | None = None) -> tuple[list, np.ndarray]:
    """(detected faces, their L2-normalised embeddings) of a photo; a caller asking both "who is this?" and "which
    library faces are nearest?" embeds once and passes the result to :func:`match_faces` and :func:`nearest_faces`."""
    try:
        photo = load_photo(Path(image_path), settings.max_image_pixels)
    except PhotoError as exc:
        raise InvalidInput(f"cannot read photo: {exc}") from exc
    models = models or shared_models(settings)
    faces = models.detect(photo.image)
    if not faces:
        return [], np.zeros((0, 512), dtype=np.float32)
    crops = [models.align(photo.image, f.landmarks) for f in faces]
    return faces, l2_normalize(models.embed(crops))


def _bbox(face) -> tuple[float, float, float, float]:
    return tuple(round(float(v), 1) for v in face.bbox)  # type: ignore[return-value]


def find_person(settings: Settings, image_path: str | Path, models: FaceModels | None = None) -> list[FaceMatch]:
    """Who is in a photo that is not in the library: detect and embed its faces, match them against prototypes
    of active persons built from human-labelled faces (threshold ``settings.person_match_threshold``, margin
    ``person_margin``). The faces of the photo are matched jointly, so one person is given to one face at most.
    Unmatched faces come back with ``person_id=None`` and their best score."""
    return match_faces(settings, *embed_photo(settings, image_path, models))


def match_faces(settings: Settings, faces: list, X: np.ndarray) -> list[FaceMatch]:
    """:func:`find_person` on faces already embedded (:func:`embed_photo`)."""
    if not faces:
        return []
    with session_scope(settings.sql_url) as s:
        protos = human_prototypes(s, settings, (PERSON_ACTIVE,))
        names = dict(s.execute(select(Person.person_id, Person.name).where(Person.status == PERSON_ACTIVE)).all())
    if protos is None or not len(protos):
        return [FaceMatch(_bbox(f), None, None, None, None) for f in faces]
    a = assign_faces(protos, X, threshold=settings.person_match_threshold, margin=settings.person_margin,
                     strategy=settings.person_strategy, groups=[0] * len(faces))
    pids = a.person_ids(protos)
    return [FaceMatch(_bbox(f), pid, names.get(pid) if pid else None, finite_or_none(a.confidence[i]), finite_or_none(a.margin[i]))
            for i, (f, pid) in enumerate(zip(faces, pids))]


def _brute_force(settings: Settings, X: np.ndarray, limit: int) -> list[tuple[int, str, float]]:
    """Nearest faces from the embedding files when Qdrant is busy: exact cosine over every vector (200k × 512
    float32 is well under a second)."""
    ids, E = load_embeddings(settings)
    if not ids or not len(X):
        return []
    sims = X @ E.T
    k = min(limit, len(ids))
    picked: list[tuple[int, str, float]] = []
    for qi, row in enumerate(sims):
        top = np.argpartition(-row, k - 1)[:k] if k < len(ids) else np.arange(len(ids))
        top = top[np.lexsort((np.asarray(ids, dtype=object)[top].astype(str), -row[top]))]
        picked.extend((qi, ids[j], float(row[j])) for j in top)
    return picked


def search(settings: Settings, image_path: str | Path, limit: int = 10, models: FaceModels | None = None) -> list[SearchHit]:
    """The ``limit`` nearest library faces to each face of a photo, ordered by query face then score.

    Qdrant answers normally; when another process holds the local folder, or no collection exists yet, the same
    answer is computed by brute force over the embedding files. Person and photo always come from SQL, the source
    of truth (a payload may still wait for the next run to be pushed)."""
    _, X = embed_photo(settings, image_path, models)
    return nearest_faces(settings, X, limit)


def nearest_faces(settings: Settings, X: np.ndarray, limit: int = 10) -> list[SearchHit]:
    """:func:`search` for query faces already embedded (:func:`embed_photo`)."""
    if not len(X):
        return []
    raw: list[tuple[int, str, float]] | None = None
    try:
        with open_vector_client(settings) as client:
            store = FaceVectorStore(client, settings.qdrant_collection)
            if store.exists():
                raw = []
                for qi, vec in enumerate(X):
                    raw.extend((qi, fid, score) for fid, score, _ in store.search(vec, limit=limit))
    except VectorStoreBusy:
        log.info("vector store busy: searching the embedding files instead")
    if raw is None:
        raw = _brute_force(settings, X, limit)
    with session_scope(settings.sql_url) as s:
        rows = {f.face_id: (f.person_id, f.image_id) for f in face_state.faces_by_id(s, {r[1] for r in raw})}
        pids = sorted({p for p, _ in rows.values() if p})
        names = dict(s.execute(select(Person.person_id, Person.name).where(Person.person_id.in_(pids))).all()) if pids else {}
    hits = []
    for qi, fid, score in raw:
        pid, image_id = rows.get(fid, (None, None))
        hits.append(SearchHit(qi, fid, score, pid, names.get(pid) if pid else None, image_id))
    return hits
