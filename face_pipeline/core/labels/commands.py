"""Every human action on people and faces, in one place, so the CLI, the Python API and the web page behave
identically.

Rules every operation follows, and why:

* **SQL only; the vector store follows.** SQL is the source of truth. An operation changes SQL in one transaction
  and marks the faces it touched ``payload_dirty``; it never opens the vector store. The next pipeline run pushes
  dirty payloads (:mod:`sync`) — and every human change triggers one (the label-change sensor), while readers
  (``search``, the web app) take persons from SQL. Why: Qdrant local mode admits one process and a run may hold
  it for minutes, and merely opening it (import + loading the collection) made a label command cost seconds
  instead of a fraction of one.
* **An event per face changed, plus person-level events.** ``FaceAssignmentEvent`` rows are the sensors'
  cursor (re-cluster, retrain) and the audit log, so every human change appends at least one. Events hold
  person *ids* only, never names: deleting a person must erase the name everywhere, and an append-only log
  cannot be scrubbed.
* **Humans outrank automation.** ``manual`` and ``cluster`` labels (``HUMAN_SOURCES``) are never overwritten by
  ``label_cluster`` (a bulk action) or ``assign_person``; a rejection ("not this person") is never overridden by
  automation. Between two human statements the more specific, later one wins (``label_face`` on a face).
* **One person at most once per photo.** When an action would put two faces of a photo on one person, one is
  kept (human label first, then the better face: quality score, then detector score) and the other is left out
  or unassigned, always reported and, when unassigned, logged.
* **Names resolve strictly.** A reference is a person id or an exact name. An ambiguous name is an error that
  lists the ids; a hidden or merged person named as a label target is an error that says what to do, instead of
  silently labelling faces into a person nobody sees.

Unassigned faces get ``cluster_id = NULL`` so the clustering stage picks them up again.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from face_pipeline.core import face_state
from face_pipeline.core.assign import assign_faces
from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import (
    HUMAN_SOURCES,
    PERSON_ACTIVE,
    PERSON_HIDDEN,
    PERSON_MERGED,
    SOURCE_AUTO,
    SOURCE_CLUSTER,
    SOURCE_MANUAL,
    FaceAssignmentEvent,
    FaceInstance,
    FaceRejection,
    Person,
)
from face_pipeline.core.embedding_files import load_embeddings
from face_pipeline.core.errors import Conflict, InvalidInput, LibraryNotReady, NotFound
from face_pipeline.core.labels.evidence import human_prototypes
from face_pipeline.core.labels.refs import clean_ref, faces_of, get_face, resolve_person
from face_pipeline.core.labels.results import LabelResult
from face_pipeline.settings import Settings

MAX_NAME = 300  # Person.name column width


# ---------------------------------------------------------------------------------------------- helpers ----
def _clean_name(name: str | None) -> str:
    """A new or changed name: stripped, non-empty, fits the column, and never shaped like a person id (a name
    that is also someone's id would make references ambiguous)."""
    name = " ".join((name or "").split())
    if not name:
        raise InvalidInput("a person's name must not be empty")
    if len(name) > MAX_NAME:
        raise InvalidInput(f"a person's name is limited to {MAX_NAME} characters")
    if face_state.PERSON_ID_RE.fullmatch(name):
        raise InvalidInput(f"{name!r} looks like a person id, not a name")
    return name


def _finite(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


class _Log:
    """Appends events for one operation with its actor and reason, and counts them for the result."""

    def __init__(self, s: Session, res: LabelResult, actor: str, reason: str | None):
        self.s, self.res, self.actor, self.reason = s, res, (actor or "user"), reason

    def __call__(self, action: str, *, face_id: str | None = None, from_person: str | None = None,
                 to_person: str | None = None, cluster_id: str | None = None, details: dict | None = None) -> None:
        self.s.add(FaceAssignmentEvent(actor=self.actor, action=action, face_id=face_id, from_person=from_person,
                                       to_person=to_person, cluster_id=cluster_id, reason=self.reason, details=details))
        self.res.events += 1


def _require_usable(p: Person, role: str = "label target") -> Person:
    """Merged persons are gone (their faces live on in the target); hidden ones are out of sight. Labelling faces
    into either would make them disappear, so say what to do instead."""
    if p.status == PERSON_MERGED:
        raise Conflict(f"person {p.person_id} was merged into {p.merged_into}; use that person instead")
    if p.status == PERSON_HIDDEN and role == "label target":
        raise Conflict(f"person {p.person_id} ({p.name!r}) is hidden; unhide it first")
    return p


def _label_target(s: Session, ref: str) -> tuple[Person | None, str]:
    """(existing person, its name) for a label's ``name`` argument, or (None, clean new name) when no active
    person has that name and it should be created. A person id is accepted too (the web page passes ids)."""
    ref = clean_ref(ref, "name")
    person = s.get(Person, ref)
    if person is None:
        if face_state.PERSON_ID_RE.fullmatch(ref):
            raise NotFound(f"no person with id {ref!r}")
        name = _clean_name(ref)
        matches = list(s.scalars(
            select(Person).where(Person.name == name, Person.status.in_((PERSON_ACTIVE, PERSON_HIDDEN))).order_by(Person.person_id)
        ))
        active = [m for m in matches if m.status == PERSON_ACTIVE]
        if len(active) > 1:
            raise InvalidInput(f"name {name!r} is ambiguous: {', '.join(m.person_id for m in active)}; use a person id")
        if active:
            person = active[0]
        elif matches:  # only hidden ones: creating a second "name" would make every later reference ambiguous
            person = matches[0]
        else:
            return None, name
    _require_usable(person)
    return person, person.name


def _create_person(s: Session, name: str, log_: _Log, person_id: str | None = None, details: dict | None = None) -> Person:
    person = Person(person_id=person_id or face_state.new_person_id(), name=name, status=PERSON_ACTIVE)
    s.add(person)
    s.flush()  # the row must exist before faces point at it (no ORM relationship orders the inserts)
    log_("create_person", to_person=person.person_id, details=details)
    log_.res.created = True
    return person


def _check_name_free(s: Session, name: str, exclude: str | None = None) -> None:
    """Explicitly creating or renaming to a name that an active or hidden person already has would make names
    ambiguous; the user almost certainly meant that person (merge or reassign instead)."""
    clash = [p.person_id for p in s.scalars(select(Person).where(Person.name == name, Person.status.in_((PERSON_ACTIVE, PERSON_HIDDEN))))
             if p.person_id != exclude]
    if clash:
        raise Conflict(f"a person named {name!r} already exists ({', '.join(clash)}); merge into it or reassign faces to it instead")


# ------------------------------------------------------------------------------------------- labelling ----
def label_cluster(settings: Settings, cluster_id: str, name: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
    """Name a cluster: every face whose ``cluster_id`` is ``cluster_id`` gets the person (created when no active
    person has that name, else joined), source ``cluster``.

    Left alone and reported: faces a human already gave to someone else (``skipped``), faces rejected for the
    person (``rejected``), and same-photo conflicts (``conflicts``): of the faces of one photo only the best
    gets the person, and none does when the person already has a human-labelled face in that photo. An
    auto-assigned face of the person in such a photo loses it (``unassigned``): a human's word beats automation.
    """
    cluster_id = clean_ref(cluster_id, "cluster id")
    with session_scope(settings.sql_url) as s:
        faces = list(s.scalars(select(FaceInstance).where(FaceInstance.cluster_id == cluster_id).order_by(FaceInstance.face_id)))
        if not faces:
            raise NotFound(f"no faces in cluster {cluster_id!r}")
        target, clean = _label_target(s, name)
        pid = target.person_id if target else face_state.new_person_id()
        res = LabelResult("label_cluster", person_id=pid, name=clean)
        log_ = _Log(s, res, actor, reason)
        rejected = set(s.scalars(select(FaceRejection.face_id).where(FaceRejection.person_id == pid)))

        candidates: list[FaceInstance] = []
        for f in faces:
            if f.person_id == pid and f.assignment_source in HUMAN_SOURCES:
                res.unchanged.append(f.face_id)
            elif f.person_id not in (None, pid) and f.assignment_source in HUMAN_SOURCES:
                res.skipped.append(f.face_id)
            elif f.face_id in rejected:
                res.rejected.append(f.face_id)
            else:
                candidates.append(f)

        cand_ids = {f.face_id for f in candidates}
        images = sorted({f.image_id for f in candidates})
        holders: dict[str, list[FaceInstance]] = defaultdict(list)  # the person's other faces in those photos
        for i in range(0, len(images), 500):
            for h in s.scalars(select(FaceInstance).where(FaceInstance.person_id == pid, FaceInstance.image_id.in_(images[i : i + 500]))):
                if h.face_id not in cand_ids:
                    holders[h.image_id].append(h)
        by_image: dict[str, list[FaceInstance]] = defaultdict(list)
        for f in candidates:
            by_image[f.image_id].append(f)

        winners: list[FaceInstance] = []
        losers_auto: list[tuple[FaceInstance, str]] = []
        for image_id, group in by_image.items():
            held = holders.get(image_id, [])
            if any(h.assignment_source in HUMAN_SOURCES for h in held):
                res.conflicts.extend(f.face_id for f in group)
                continue
            best = max(group, key=face_state.best_first_key)
            winners.append(best)
            res.conflicts.extend(f.face_id for f in group if f is not best)
            losers_auto.extend((h, best.face_id) for h in held)

        if winners and target is None:
            target = _create_person(s, clean, log_, person_id=pid)
        if target is None:  # nothing could be labelled: no empty person is created
            res.person_id = None
        for h, kept in losers_auto:
            old_cluster = h.cluster_id
            face_state.unassign(h)
            res.unassigned.append(h.face_id)
            log_("unassign_face", face_id=h.face_id, from_person=pid, cluster_id=old_cluster,
                 details={"cause": "same_photo_conflict", "kept": kept})
        for f in sorted(winners, key=lambda f: f.face_id):
            old = f.person_id
            face_state.assign(f, pid, SOURCE_CLUSTER)
            res.changed.append(f.face_id)
            log_("label_cluster", face_id=f.face_id, from_person=old, to_person=pid, cluster_id=cluster_id,
                 details={"source": SOURCE_CLUSTER})
        for lst in (res.unchanged, res.skipped, res.rejected, res.conflicts, res.unassigned):
            lst.sort()
    return res


def _label_one(settings: Settings, face_id: str, name: str, action: str, actor: str, reason: str | None) -> LabelResult:
    with session_scope(settings.sql_url) as s:
        f = get_face(s, face_id)
        target, clean = _label_target(s, name)
        pid = target.person_id if target else face_state.new_person_id()
        res = LabelResult(action, person_id=pid, name=clean)
        log_ = _Log(s, res, actor, reason)
        if f.person_id == pid and f.assignment_source == SOURCE_MANUAL:
            res.unchanged.append(f.face_id)
            return res
        if target is None:
            target = _create_person(s, clean, log_, person_id=pid)
        # The user says this face IS the person: an earlier "not this person" for it is withdrawn.
        cleared = s.execute(delete(FaceRejection).where(FaceRejection.face_id == f.face_id, FaceRejection.person_id == pid)).rowcount
        # The most specific, latest statement wins: another face of the photo holding the person loses it.
        others = s.scalars(select(FaceInstance).where(FaceInstance.person_id == pid, FaceInstance.image_id == f.image_id,
                                                      FaceInstance.face_id != f.face_id).order_by(FaceInstance.face_id))
        for o in others:
            old_cluster = o.cluster_id
            face_state.unassign(o)
            res.unassigned.append(o.face_id)
            log_("unassign_face", face_id=o.face_id, from_person=pid, cluster_id=old_cluster,
                 details={"cause": "same_photo_conflict", "kept": f.face_id})
        old, old_cluster = f.person_id, f.cluster_id
        face_state.assign(f, pid, SOURCE_MANUAL)
        res.changed.append(f.face_id)
        log_(action, face_id=f.face_id, from_person=old, to_person=pid, cluster_id=old_cluster,
             details={"source": SOURCE_MANUAL, "rejection_cleared": bool(cleared)})
    return res


def label_face(settings: Settings, face_id: str, name: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
    """Say who one face is (source ``manual``): ``name`` is an existing person's exact name or id, or a new name
    (a person is created). Clears any rejection of that person for this face. If another face of the same
    photo had the person, that face is unassigned (reported in ``unassigned``, logged)."""
    return _label_one(settings, face_id, name, "label_face", actor, reason)


def reassign_face(settings: Settings, face_id: str, to: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
    """Move a face to another person (existing ref, or a new name); a manual label, like :func:`label_face`,
    logged as ``reassign_face`` so the audit trail shows a correction rather than a first label."""
    return _label_one(settings, face_id, to, "reassign_face", actor, reason)


def assign_person(settings: Settings, face_id: str, *, actor: str = "user", reason: str | None = None) -> str | None:
    """Automatic assignment of one (new) face: the person it now has, or ``None``.

    Prototypes come from human-labelled faces of active and hidden persons (hiding a person hides them from
    lists, it does not make their faces strangers), as in ``organize``. Threshold, margin and strategy are
    ``settings.person_match_threshold`` / ``person_margin`` / ``person_strategy``; persons rejected for this
    face are excluded, and so is every person another face of its photo already has (any source: one face is
    decided alone here, so it must not create a same-photo duplicate that only a full re-assignment could
    resolve). A human-labelled face is never touched: its person is returned as is. An auto-assigned face is
    re-evaluated and may move or lose its person. Pipeline callers pass ``actor="pipeline"`` so the label-change
    sensor does not take their events for human ones.
    """
    with session_scope(settings.sql_url) as s:
        f = get_face(s, face_id)
        if f.assignment_source in HUMAN_SOURCES:
            return f.person_id
        ids, X = load_embeddings(settings, face_ids=[f.face_id])
        if not ids:
            raise LibraryNotReady(f"face {f.face_id} has no embedding yet (its batch is not embedded)")
        protos = human_prototypes(s, settings, (PERSON_ACTIVE, PERSON_HIDDEN), exclude=[f.face_id])
        new: str | None = None
        conf = margin = None
        if protos is not None and len(protos):
            index = {p: i for i, p in enumerate(protos.person_ids)}
            rej = {index[p] for p in s.scalars(select(FaceRejection.person_id).where(FaceRejection.face_id == f.face_id)) if p in index}
            taken = {index[p] for p in s.scalars(select(FaceInstance.person_id).where(
                FaceInstance.image_id == f.image_id, FaceInstance.face_id != f.face_id, FaceInstance.person_id.is_not(None))) if p in index}
            a = assign_faces(protos, X, threshold=settings.person_match_threshold, margin=settings.person_margin,
                             strategy=settings.person_strategy, groups=[f.image_id], rejected={0: rej},
                             occupied={f.image_id: taken})
            new = a.person_ids(protos)[0]
            conf, margin = _finite(a.confidence[0]), _finite(a.margin[0])
        old = f.person_id
        res = LabelResult("assign_person", person_id=new)
        log_ = _Log(s, res, actor, reason)
        if new is not None:
            if new != old or f.assignment_source != SOURCE_AUTO or f.person_confidence != conf:
                old_cluster = f.cluster_id
                face_state.assign(f, new, SOURCE_AUTO, conf, margin)
                if new != old:
                    log_("auto_assign", face_id=f.face_id, from_person=old, to_person=new, cluster_id=old_cluster,
                         details={"source": SOURCE_AUTO, "confidence": conf, "margin": margin})
        elif old is not None:
            old_cluster = f.cluster_id
            face_state.unassign(f)
            log_("auto_unassign", face_id=f.face_id, from_person=old, cluster_id=old_cluster,
                 details={"confidence": conf, "margin": margin})
    return new


# ---------------------------------------------------------------------------------------------- persons ----
def merge_persons(settings: Settings, sources: Sequence[str], target: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
    """Merge ``sources`` into ``target``: their faces move (keeping their source), the sources become
    ``merged`` with ``merged_into = target`` (earlier merges into a source are re-pointed), their rejections
    become the target's and their prototypes are dropped (the pipeline rebuilds them).

    After a merge all involved persons are one, so contradictions are resolved: a face of the group rejected for
    another member keeps its person if a human labelled it (the rejection goes) and is unassigned if automation
    did (the rejection stays, now for the target). Two faces of one photo: the better one (human first) stays,
    the other is unassigned and logged.
    """
    if isinstance(sources, str):
        sources = [sources]
    with session_scope(settings.sql_url) as s:
        tgt = _require_usable(resolve_person(s, target), "merge target")
        if tgt.status != PERSON_ACTIVE:
            raise Conflict(f"merge target {tgt.person_id} ({tgt.name!r}) is {tgt.status}; unhide it first")
        srcs: list[Person] = []
        for ref in sources:
            p = resolve_person(s, ref)
            if p.status == PERSON_MERGED:
                raise Conflict(f"person {p.person_id} was already merged into {p.merged_into}")
            if p.person_id == tgt.person_id:
                raise InvalidInput(f"cannot merge person {p.person_id} into itself")
            if all(p.person_id != q.person_id for q in srcs):
                srcs.append(p)
        if not srcs:
            raise InvalidInput("merge needs at least one source person")
        tid = tgt.person_id
        src_ids = [p.person_id for p in srcs]
        group = set(src_ids) | {tid}
        res = LabelResult("merge_persons", person_id=tid, name=tgt.name)
        log_ = _Log(s, res, actor, reason)

        faces = faces_of(s, group)
        rejections = list(s.scalars(select(FaceRejection).where(FaceRejection.person_id.in_(group))))
        rejected_in_group: dict[str, list[FaceRejection]] = defaultdict(list)
        for r in rejections:
            rejected_in_group[r.face_id].append(r)

        def drop(f: FaceInstance, details: dict) -> None:
            old, old_cluster = f.person_id, f.cluster_id
            face_state.unassign(f)
            res.unassigned.append(f.face_id)
            log_("unassign_face", face_id=f.face_id, from_person=old, cluster_id=old_cluster, details=details)

        gone: set[int] = set()
        alive: list[FaceInstance] = []
        for f in faces:
            if f.face_id in rejected_in_group:
                if f.assignment_source in HUMAN_SOURCES:  # a human label outranks a rejection
                    for r in rejected_in_group.pop(f.face_id):
                        gone.add(id(r))
                        s.delete(r)
                else:
                    res.rejected.append(f.face_id)
                    drop(f, {"cause": "rejected_for_merged_person", "merge_target": tid})
                    continue
            alive.append(f)

        by_image: dict[str, list[FaceInstance]] = defaultdict(list)
        for f in alive:
            by_image[f.image_id].append(f)
        keep: list[FaceInstance] = []
        for group_faces in by_image.values():
            best = max(group_faces, key=lambda f: (f.person_id == tid and f.assignment_source in HUMAN_SOURCES, *face_state.best_first_key(f)))
            keep.append(best)
            for f in group_faces:
                if f is not best:
                    res.conflicts.append(f.face_id)
                    drop(f, {"cause": "same_photo_conflict", "kept": best.face_id, "merge_target": tid})

        moved: Counter = Counter()
        for f in sorted(keep, key=lambda f: f.face_id):
            if f.person_id == tid:
                continue
            old = f.person_id
            f.person_id = f.cluster_id = tid
            f.payload_dirty = True
            moved[old] += 1
            res.changed.append(f.face_id)
            log_("merge_persons", face_id=f.face_id, from_person=old, to_person=tid, cluster_id=old,
                 details={"source": f.assignment_source})

        # "Not S" now means "not T". Rejections already deleted above (human-labelled faces) are skipped.
        existing_t = {r.face_id for r in rejections if r.person_id == tid and id(r) not in gone}
        for r in rejections:
            if r.person_id in src_ids and id(r) not in gone:
                if r.face_id not in existing_t:
                    s.add(FaceRejection(face_id=r.face_id, person_id=tid))
                    existing_t.add(r.face_id)
                s.delete(r)
        for earlier in s.scalars(select(Person).where(Person.merged_into.in_(src_ids))):
            earlier.merged_into = tid
        for p in srcs:
            p.status, p.merged_into = PERSON_MERGED, tid
            log_("merge_persons", from_person=p.person_id, to_person=tid, details={"faces_moved": moved[p.person_id]})
        s.flush()
        res.unchanged = [f.face_id for f in keep if f.person_id == tid and f.face_id not in res.changed]
        for lst in (res.changed, res.unchanged, res.rejected, res.conflicts, res.unassigned):
            lst.sort()
    return res


def split_person(settings: Settings, person_ref: str, face_ids: Sequence[str], new_name: str, *, actor: str = "user",
                 reason: str | None = None) -> LabelResult:
    """Move some of a person's faces to a new person named ``new_name`` (manual labels: the user picked them).

    Refused when a face is not the person's, when two of the faces share a photo, or when an active or hidden
    person already has the name (then :func:`reassign_face` or :func:`merge_persons` is what was meant)."""
    if isinstance(face_ids, str):
        face_ids = [face_ids]
    with session_scope(settings.sql_url) as s:
        p = _require_usable(resolve_person(s, person_ref), "split source")
        name = _clean_name(new_name)
        _check_name_free(s, name)
        wanted = sorted({clean_ref(f, "face id") for f in face_ids})
        if not wanted:
            raise InvalidInput("split needs at least one face")
        faces = list(s.scalars(select(FaceInstance).where(FaceInstance.face_id.in_(wanted)).order_by(FaceInstance.face_id)))
        missing = sorted(set(wanted) - {f.face_id for f in faces})
        if missing:
            raise NotFound(f"no face with id {', '.join(missing)}")
        foreign = [f.face_id for f in faces if f.person_id != p.person_id]
        if foreign:
            raise InvalidInput(f"faces {', '.join(foreign)} are not person {p.person_id}'s")
        photos = Counter(f.image_id for f in faces)
        shared = sorted(i for i, n in photos.items() if n > 1)
        if shared:
            raise InvalidInput(f"faces of one photo cannot all become one new person (photos {', '.join(shared)})")
        res = LabelResult("split_person", name=name)
        log_ = _Log(s, res, actor, reason)
        new = _create_person(s, name, log_, details={"split_from": p.person_id})
        res.person_id = new.person_id
        for f in faces:
            old_cluster = f.cluster_id
            face_state.assign(f, new.person_id, SOURCE_MANUAL)
            res.changed.append(f.face_id)
            log_("split_person", face_id=f.face_id, from_person=p.person_id, to_person=new.person_id, cluster_id=old_cluster,
                 details={"source": SOURCE_MANUAL})
        log_("split_person", from_person=p.person_id, to_person=new.person_id, details={"faces": len(faces)})
    return res


def reject_face(settings: Settings, face_id: str, person_ref: str | None = None, *, actor: str = "user",
                reason: str | None = None) -> LabelResult:
    """"This face is not that person" (default: its current person). The face loses the person if it had it and
    the (face, person) pair is recorded, so no automation assigns it there again."""
    with session_scope(settings.sql_url) as s:
        f = get_face(s, face_id)
        if person_ref is None:
            if f.person_id is None:
                raise InvalidInput(f"face {f.face_id} has no person; say which person it is not")
            p = s.get(Person, f.person_id)
        else:
            p = _require_usable(resolve_person(s, person_ref), "rejected person")
        pid = p.person_id
        res = LabelResult("reject_face", person_id=pid, name=p.name)
        log_ = _Log(s, res, actor, reason)
        had = f.person_id == pid
        exists = s.get(FaceRejection, (f.face_id, pid)) is not None
        if exists and not had:
            res.unchanged.append(f.face_id)
            return res
        if not exists:
            s.add(FaceRejection(face_id=f.face_id, person_id=pid))
        old_cluster = f.cluster_id
        if had:
            face_state.unassign(f)
            res.unassigned.append(f.face_id)
        res.changed.append(f.face_id)
        log_("reject_face", face_id=f.face_id, from_person=pid if had else f.person_id, to_person=f.person_id,
             cluster_id=old_cluster, details={"rejected_person": pid})
    return res


def unassign_face(settings: Settings, face_id: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
    """Take a face's person away (it returns to clustering). Unlike :func:`reject_face` nothing stops automation
    from assigning the same person again later."""
    with session_scope(settings.sql_url) as s:
        f = get_face(s, face_id)
        res = LabelResult("unassign_face", person_id=f.person_id)
        if f.person_id is None:
            res.unchanged.append(f.face_id)
            return res
        log_ = _Log(s, res, actor, reason)
        old, old_cluster = f.person_id, f.cluster_id
        face_state.unassign(f)
        res.changed.append(f.face_id)
        res.unassigned.append(f.face_id)
        log_("unassign_face", face_id=f.face_id, from_person=old, cluster_id=old_cluster)
    return res


def _set_status(settings: Settings, ref: str, status: str, action: str, actor: str, reason: str | None) -> LabelResult:
    with session_scope(settings.sql_url) as s:
        p = _require_usable(resolve_person(s, ref), "person")
        res = LabelResult(action, person_id=p.person_id, name=p.name)
        if p.status == status:
            return res
        p.status = status
        _Log(s, res, actor, reason)(action, from_person=p.person_id, to_person=p.person_id, details={"status": status})
    return res


def hide_person(settings: Settings, ref: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
    """Hide a person from lists (strangers, people one does not want to see); their faces stay theirs, so they
    do not come back as unknown clusters."""
    return _set_status(settings, ref, PERSON_HIDDEN, "hide_person", actor, reason)


def unhide_person(settings: Settings, ref: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
    return _set_status(settings, ref, PERSON_ACTIVE, "unhide_person", actor, reason)


def rename_person(settings: Settings, ref: str, new_name: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
    """Rename a person. Refused when another active or hidden person has the name (merge instead). The event
    records the person id only: names never enter the append-only log (see :func:`delete_person`)."""
    with session_scope(settings.sql_url) as s:
        p = _require_usable(resolve_person(s, ref), "person")
        name = _clean_name(new_name)
        res = LabelResult("rename_person", person_id=p.person_id, name=name)
        if p.name == name:
            return res
        _check_name_free(s, name, exclude=p.person_id)
        p.name = name
        _Log(s, res, actor, reason)("rename_person", from_person=p.person_id, to_person=p.person_id)
    return res


def delete_person(settings: Settings, ref: str, *, actor: str = "user", reason: str | None = None) -> LabelResult:
    """Erase a person: the row (and persons earlier merged into it, which carry the same identity) is deleted,
    with its prototypes and rejections; its faces are unassigned (person, source and cluster cleared, so they
    are clustered again) and marked dirty so the sync clears ``person_id`` in Qdrant. Events keep only the
    opaque id: the ``delete_person`` event has no name."""
    with session_scope(settings.sql_url) as s:
        p = resolve_person(s, ref)
        res = LabelResult("delete_person", person_id=p.person_id, name=p.name)
        log_ = _Log(s, res, actor, reason)
        doomed = [p.person_id]
        frontier = [p.person_id]
        while frontier:  # everything merged (transitively) into it
            frontier = [q for q in s.scalars(select(Person.person_id).where(Person.merged_into.in_(frontier))) if q not in doomed]
            doomed.extend(frontier)
        for f in faces_of(s, doomed):
            old, old_cluster = f.person_id, f.cluster_id
            face_state.unassign(f)
            res.unassigned.append(f.face_id)
            log_("delete_person", face_id=f.face_id, from_person=old, cluster_id=old_cluster)
        s.execute(delete(FaceRejection).where(FaceRejection.person_id.in_(doomed)))
        persons = list(s.scalars(select(Person).where(Person.person_id.in_(doomed))))
        for q in persons:
            q.merged_into = None  # self-references would block deleting them in one flush
        s.flush()
        for q in persons:
            s.delete(q)
        log_("delete_person", from_person=p.person_id, details={"faces": len(res.unassigned), "merged_persons": doomed[1:]})
        res.changed = list(res.unassigned)
    return res
