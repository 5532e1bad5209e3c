"""``/api/v1``: the user's design (clusters, dual-mode clustering, training, runs, the person API) over the label
operations the CLI uses. Writes need a token (``writer``), training / re-clustering / deleting the admin token."""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from face_pipeline.core import labels
from face_pipeline.core.cluster import METHODS
from face_pipeline.core.errors import InvalidInput
from face_pipeline.settings import Settings
from face_pipeline.web import images, suggestions_api, undo, views
from face_pipeline.web.app import admin, reader, writer
from face_pipeline.web.auth import Caller
from face_pipeline.web.runs import RunLauncher, organize_run_config, train_run_config

router = APIRouter()
ID = Field(min_length=1, max_length=300)
Ref = str  # a person id or an exact name


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _launcher(request: Request) -> RunLauncher:
    return request.app.state.launcher


def _result(res) -> dict[str, Any]:
    return dataclasses.asdict(res)


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


class LabelClusterBody(BaseModel):
    name: str = Field(min_length=1, max_length=300, description="A new name, an existing person's exact name, or a person id.")
    merge: bool = Field(False, description="The name belongs to an existing person: add the cluster's faces to them (else 409).")
    exclude_face_ids: list[str] = Field(default_factory=list, max_length=1000,
                                        description="'Not the same person': these faces are rejected for the person after naming.")


class DualClusterBody(BaseModel):
    person_threshold: float | None = Field(None, ge=-1, le=1)
    unknown_method: Literal[METHODS] | None = None  # type: ignore[valid-type]
    unknown_min_size: int | None = Field(None, ge=1, le=100000)
    unknown_threshold: float | None = Field(None, ge=-1, le=1)
    use_trained_model: bool = False


class TrainBody(BaseModel):
    epochs: int | None = Field(None, ge=1, le=10000)
    margin: float | None = Field(None, gt=0, le=2)
    batch_size: int | None = Field(None, ge=2, le=100000)
    learning_rate: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)


class MergeBody(BaseModel):
    sources: list[str] = Field(min_length=1, max_length=100, description="Person ids or names merged into the target.")
    target: str = ID


class SplitBody(BaseModel):
    face_groups: list[list[str]] = Field(min_length=1, max_length=50, description="Each group becomes a new person.")
    names: list[str] = Field(min_length=1, max_length=50, description="One new name per group.")


class NameBody(BaseModel):
    name: str = ID


class MoveBody(BaseModel):
    to: str = Field(min_length=1, max_length=300, description="Person id or name (created if new).")


class RejectBody(BaseModel):
    person: str | None = Field(None, min_length=1, max_length=300, description="Default: the face's current person.")


class AcceptBody(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=300, description="For a group of unnamed faces: the name to give.")


class RunAccepted(BaseModel):
    run_id: str
    status: str
    job: str
    dagster_url: str


# ----------------------------------------------------------------------------------------------------------------
# Clusters and runs (the user's design)
# ----------------------------------------------------------------------------------------------------------------


@router.get("/faces/clusters", tags=["clusters"])
def list_clusters(request: Request, include_labeled: bool = False, min_size: int = Query(2, ge=1, le=1_000_000),
                  limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0), strip: int = Query(20, ge=0, le=200),
                  _: Caller = Depends(reader)):
    """Unknown clusters, largest first, each with its best faces; one-face noise never (``min_size``)."""
    return views.clusters(_settings(request), include_labeled, min_size, limit, offset, strip)


@router.post("/faces/clusters/{cluster_id}/label", tags=["clusters"])
def label_cluster(request: Request, cluster_id: str, body: LabelClusterBody, caller: Caller = Depends(writer)):
    """Name every face of a cluster. A name somebody already has answers 409 unless ``merge`` is true."""
    settings = _settings(request)
    res = labels.label_cluster(settings, cluster_id, body.name, actor=caller.actor, merge=body.merge)
    out = _result(res)
    excluded = sorted(set(body.exclude_face_ids) & set(res.changed))
    out["excluded"] = [_result(labels.reject_face(settings, f, res.person_id, actor=caller.actor,
                                                  reason=f"not the same person as cluster {cluster_id}")) for f in excluded]
    return out


@router.post("/faces/cluster/dual", status_code=202, response_model=RunAccepted, tags=["runs"])
def cluster_dual(request: Request, body: DualClusterBody | None = None, caller: Caller = Depends(admin)):
    """Launch the organize job (known people assigned, unknown faces clustered) as a Dagster run."""
    b = body or DualClusterBody()
    cfg = organize_run_config(b.person_threshold, b.unknown_method, b.unknown_min_size, b.unknown_threshold, b.use_trained_model)
    launch = _launcher(request).submit("organize", cfg, caller.actor)
    return _launcher(request).status(launch.run_id)


@router.post("/faces/train", status_code=202, response_model=RunAccepted, tags=["runs"])
def train(request: Request, body: TrainBody | None = None, caller: Caller = Depends(admin)):
    """Launch training of the projection head as a Dagster run (it goes live only if the gate passes it)."""
    b = body or TrainBody()
    launch = _launcher(request).submit("train", train_run_config(**b.model_dump()), caller.actor)
    return _launcher(request).status(launch.run_id)


@router.get("/runs/latest", tags=["runs"])
def latest_run(request: Request, _: Caller = Depends(reader)):
    """The newest run of the home's Dagster instance (launched by anyone), or null."""
    return {"run": _launcher(request).latest(), "dagster_ui": _settings(request).web_dagster_ui_url}


@router.get("/runs/{run_id}", tags=["runs"])
def get_run(request: Request, run_id: str, _: Caller = Depends(reader)):
    return _launcher(request).status(run_id)


# ----------------------------------------------------------------------------------------------------------------
# Persons
# ----------------------------------------------------------------------------------------------------------------


@router.get("/persons", tags=["persons"])
def list_persons(request: Request, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
                 include_hidden: bool = False, _: Caller = Depends(reader)):
    return views.people(_settings(request), limit, offset, include_hidden)


@router.get("/names", tags=["persons"])
def person_names(request: Request, _: Caller = Depends(reader)):
    """Active people's names and ids (autocomplete)."""
    return views.person_names(_settings(request))


@router.post("/persons/merge", tags=["persons"])
def merge_persons(request: Request, body: MergeBody, caller: Caller = Depends(writer)):
    return _result(labels.merge_persons(_settings(request), body.sources, body.target, actor=caller.actor))


@router.get("/persons/{person_ref}", tags=["persons"])
def get_person(request: Request, person_ref: Ref, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0),
               _: Caller = Depends(reader)):
    """One person (id or exact name) with a page of their faces, best first."""
    return views.person(_settings(request), person_ref, limit, offset)


@router.post("/persons/{person_ref}/split", tags=["persons"])
def split_person(request: Request, person_ref: Ref, body: SplitBody, caller: Caller = Depends(writer)):
    """Split several groups of faces off a person at once; each group becomes a new person with its name.
    Everything is checked before anything changes (groups disjoint, names distinct and new)."""
    settings = _settings(request)
    if len(body.face_groups) != len(body.names):
        raise InvalidInput(f"{len(body.face_groups)} face groups but {len(body.names)} names: give one name per group")
    names = [" ".join(n.split()) for n in body.names]
    if len({n.casefold() for n in names}) != len(names):
        raise InvalidInput("each group needs a different name")
    seen: set[str] = set()
    for group in body.face_groups:
        if not group:
            raise InvalidInput("a face group is empty")
        if seen & set(group):
            raise InvalidInput(f"faces {', '.join(sorted(seen & set(group)))} are in more than one group")
        seen |= set(group)
    results = [labels.split_person(settings, person_ref, group, name, actor=caller.actor)
               for group, name in zip(body.face_groups, names)]
    return {"person_ids": [r.person_id for r in results], "results": [_result(r) for r in results]}


@router.post("/persons/{person_ref}/hide", tags=["persons"])
def hide_person(request: Request, person_ref: Ref, caller: Caller = Depends(writer)):
    return _result(labels.hide_person(_settings(request), person_ref, actor=caller.actor))


@router.post("/persons/{person_ref}/unhide", tags=["persons"])
def unhide_person(request: Request, person_ref: Ref, caller: Caller = Depends(writer)):
    return _result(labels.unhide_person(_settings(request), person_ref, actor=caller.actor))


@router.post("/persons/{person_ref}/rename", tags=["persons"])
def rename_person(request: Request, person_ref: Ref, body: NameBody, caller: Caller = Depends(writer)):
    return _result(labels.rename_person(_settings(request), person_ref, body.name, actor=caller.actor))


@router.delete("/persons/{person_ref}", tags=["persons"])
def delete_person(request: Request, person_ref: Ref, caller: Caller = Depends(admin)):
    """Erase a person (admin token): name, prototypes and labels; their faces become unknown again."""
    return _result(labels.delete_person(_settings(request), person_ref, actor=caller.actor))


# ----------------------------------------------------------------------------------------------------------------
# Faces and photos
# ----------------------------------------------------------------------------------------------------------------


@router.post("/faces/{face_id}/move", tags=["faces"])
def move_face(request: Request, face_id: str, body: MoveBody, caller: Caller = Depends(writer)):
    return _result(labels.reassign_face(_settings(request), face_id, body.to, actor=caller.actor))


@router.post("/faces/{face_id}/label", tags=["faces"])
def label_face(request: Request, face_id: str, body: NameBody, caller: Caller = Depends(writer)):
    return _result(labels.label_face(_settings(request), face_id, body.name, actor=caller.actor))


@router.post("/faces/{face_id}/reject", tags=["faces"])
def reject_face(request: Request, face_id: str, body: RejectBody | None = None, caller: Caller = Depends(writer)):
    """'Not this person': the face loses the person and automation never gives it back."""
    return _result(labels.reject_face(_settings(request), face_id, (body or RejectBody()).person, actor=caller.actor))


@router.post("/faces/{face_id}/unassign", tags=["faces"])
def unassign_face(request: Request, face_id: str, caller: Caller = Depends(writer)):
    return _result(labels.unassign_face(_settings(request), face_id, actor=caller.actor))


JPEG = {"content": {"image/jpeg": {}}, "description": "JPEG image"}


@router.get("/faces/{face_id}/thumb", response_class=Response, responses={200: JPEG}, tags=["faces"])
def face_thumb(request: Request, face_id: str, _: Caller = Depends(reader)):
    """A JPEG crop of the face with a margin, EXIF orientation applied; cached on disk."""
    path = images.face_thumbnail(_settings(request), face_id)
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@router.get("/photos/{image_id}", response_class=Response, responses={200: JPEG}, tags=["faces"])
def photo(request: Request, image_id: str, boxes: bool = True, _: Caller = Depends(reader)):
    """A registered photo (by id, never by path), upright and downscaled, with its face boxes drawn."""
    return Response(images.photo_jpeg(_settings(request), image_id, boxes), media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=3600"})


@router.get("/photos/{image_id}/faces", tags=["faces"])
def photo_faces(request: Request, image_id: str, _: Caller = Depends(reader)):
    images.photo_path(_settings(request), image_id)  # 404 for an unregistered id
    return images.photo_faces(_settings(request), image_id)


async def _saved_upload(settings: Settings, upload: UploadFile) -> Path:
    """The uploaded photo in a private temporary file, after the size and pixel limits (400 / 413)."""
    from fastapi import HTTPException
    from PIL import Image

    limit = settings.web_max_upload_bytes
    data = bytearray()
    while chunk := await upload.read(1 << 20):
        data += chunk
        if len(data) > limit:
            raise HTTPException(413, f"photo too large: the limit is {limit} bytes")
    if not data:
        raise InvalidInput("the uploaded file is empty")
    try:
        with Image.open(io.BytesIO(bytes(data))) as img:  # header only: no pixel is decoded here
            w, h = img.size
    except Image.DecompressionBombError as exc:
        raise InvalidInput(f"photo refused: {exc}") from exc
    except Exception as exc:
        raise InvalidInput("the uploaded file is not an image this server reads (JPEG, PNG, WebP, BMP, TIFF, GIF)") from exc
    if w * h > settings.web_max_upload_pixels:
        raise InvalidInput(f"photo has {w}×{h} = {w * h} pixels; the limit is {settings.web_max_upload_pixels}")
    folder = settings.web_dir / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, suffix=".img")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return Path(name)


@router.post("/find", tags=["search"])
async def find_person(request: Request, photo: UploadFile = File(...), _: Caller = Depends(reader)):
    """Who is in this photo (not necessarily in the library)? One entry per face found."""
    settings = _settings(request)
    path = await _saved_upload(settings, photo)
    try:
        matches = await run_in_threadpool(labels.find_person, settings, path)
    finally:
        path.unlink(missing_ok=True)
    return [dataclasses.asdict(m) for m in matches]


@router.post("/search", tags=["search"])
async def search_similar(request: Request, photo: UploadFile = File(...), limit: int = Form(10, ge=1, le=100),
                         _: Caller = Depends(reader)):
    """The library faces most similar to each face of the photo (read from the embedding files when a pipeline
    run holds the vector store)."""
    settings = _settings(request)
    path = await _saved_upload(settings, photo)
    try:
        hits = await run_in_threadpool(labels.search, settings, path, limit)
    finally:
        path.unlink(missing_ok=True)
    return [dataclasses.asdict(h) for h in hits]


# ----------------------------------------------------------------------------------------------------------------
# Suggestions, events, health
# ----------------------------------------------------------------------------------------------------------------


@router.get("/suggestions", tags=["suggestions"])
def list_suggestions(request: Request, kind: Literal["face_is_person", "cluster_is_person", "check_names", "same_person"] | None = None,
                     status: str = Query("open", max_length=20), limit: int = Query(50, ge=1, le=500),
                     offset: int = Query(0, ge=0), _: Caller = Depends(reader)):
    """Open questions, those whose answer settles the most first."""
    return suggestions_api.list_open(_settings(request), kind, status, limit, offset)


@router.get("/suggestions/{suggestion_id}", tags=["suggestions"])
def get_suggestion(request: Request, suggestion_id: int, _: Caller = Depends(reader)):
    return suggestions_api.get(_settings(request), suggestion_id)


@router.post("/suggestions/{suggestion_id}/accept", tags=["suggestions"])
def accept_suggestion(request: Request, suggestion_id: int, body: AcceptBody | None = None, caller: Caller = Depends(writer)):
    return _result(suggestions_api.accept(_settings(request), suggestion_id, caller.actor, (body or AcceptBody()).name))


@router.post("/suggestions/{suggestion_id}/reject", tags=["suggestions"])
def reject_suggestion(request: Request, suggestion_id: int, caller: Caller = Depends(writer)):
    return _result(suggestions_api.reject(_settings(request), suggestion_id, caller.actor))


@router.get("/events", tags=["events"])
def list_events(request: Request, limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0),
                since_id: int | None = Query(None, ge=0), _: Caller = Depends(reader)):
    """The audit log, newest first: who changed what (actor = which token), with whether it can be undone."""
    return views.events(_settings(request), limit, offset, since_id)


@router.post("/events/{event_id}/undo", tags=["events"])
def undo_event(request: Request, event_id: int, caller: Caller = Depends(writer)):
    return _result(undo.undo_event(_settings(request), event_id, caller.actor))


@router.get("/health", tags=["library"])
def health(request: Request, _: Caller = Depends(reader)):
    """Faces, named / suggested / unknown / noise counts, the latest training and its gate verdict."""
    return views.health(_settings(request))


@router.get("/whoami", tags=["library"])
def whoami(caller: Caller = Depends(reader)):
    return {"role": caller.role, "via": caller.via, "actor": caller.actor}
