"""The HTTP API on a real library (real photos, real models' faces, SQLite and PostgreSQL): every endpoint, the
error statuses, authentication, path traversal and bad uploads. Through FastAPI's TestClient (the real app, in
process); the browser test drives the served app."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps
from sqlalchemy import select

from face_pipeline.core.db import session_scope
from face_pipeline.core.db.schema import (
    FaceAssignmentEvent,
    FaceInstance,
    FaceRejection,
)
from face_pipeline.settings import Settings
from face_pipeline.web import create_app
from face_pipeline.web.auth import COOKIE, CSRF_HEADER, fingerprint
from face_pipeline.web.images import crop_face

API = "/api/v1"
BASE = "http://127.0.0.1"  # bound to loopback, the app answers loopback host names only (DNS rebinding)


class Api:
    """A TestClient plus the library's two tokens."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.app = create_app(settings)
        self.client = TestClient(self.app, base_url=BASE)
        self.user, self.admin = self.app.state.tokens.user, self.app.state.tokens.admin

    def h(self, token: str | None) -> dict:
        return {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, token: str | None = None, **kw):
        return self.client.get(API + path, headers=self.h(token), **kw)

    def post(self, path: str, json=None, token: str | None = "user", **kw):
        tok = {"user": self.user, "admin": self.admin}.get(token, token)
        return self.client.post(API + path, json=json, headers=self.h(tok), **kw)

    def delete(self, path: str, token: str | None = "user"):
        tok = {"user": self.user, "admin": self.admin}.get(token, token)
        return self.client.delete(API + path, headers=self.h(tok))


@pytest.fixture
def api(web_settings) -> Api:
    a = Api(web_settings)
    with a.client:
        yield a


def ok(resp, status: int = 200):
    assert resp.status_code == status, f"{resp.status_code}: {resp.text[:500]}"
    return resp.json() if resp.headers.get("content-type", "").startswith("application/json") else resp


def err(resp, status: int, kind: str | None = None) -> str:
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text[:500]}"
    body = resp.json()
    assert body["detail"], body
    if kind:
        assert body["error"] == kind, body
    return body["detail"]


def cluster_of(api: Api, face_id: str) -> str:
    with session_scope(api.settings.sql_url) as s:
        return s.get(FaceInstance, face_id).cluster_id


def person_of(settings: Settings, face_id: str) -> str | None:
    with session_scope(settings.sql_url) as s:
        return s.get(FaceInstance, face_id).person_id


# ----------------------------------------------------------------------------------------------------------------


def test_clusters_label_conflict_and_merge_flag(api, web_library):
    data = ok(api.get("/faces/clusters"))
    assert data["total"] == len(data["items"]) >= PEOPLE_MIN
    sizes = [c["faces"] for c in data["items"]]
    assert sizes == sorted(sizes, reverse=True) and min(sizes) >= 2, "noise singletons are never listed by default"
    assert all(c["cluster_id"].startswith("unknown_cluster_") and c["face_ids"] for c in data["items"])
    noise_too = ok(api.get("/faces/clusters", params={"min_size": 1, "limit": 500}))
    noise = [c for c in noise_too["items"] if c["cluster_id"].startswith("unknown_noise_")]
    assert noise and all(c["faces"] == 1 for c in noise), "asked for everything: one-face noise is listed too"
    assert noise_too["total"] == data["total"] + len(noise)

    names = list(web_library.faces)
    a_cluster = cluster_of(api, web_library.faces[names[0]][1])
    b_cluster = cluster_of(api, web_library.faces[names[1]][1])
    assert a_cluster.startswith("unknown_cluster_") and b_cluster.startswith("unknown_cluster_") and a_cluster != b_cluster

    err(api.post(f"/faces/clusters/{a_cluster}/label", {"name": "Ann"}, token=None), 401)
    err(api.post(f"/faces/clusters/{a_cluster}/label", {"name": "Ann"}, token="not-a-token"), 401)
    res = ok(api.post(f"/faces/clusters/{a_cluster}/label", {"name": "Ann"}))
    assert res["created"] and res["name"] == "Ann" and len(res["changed"]) >= 3
    assert person_of(api.settings, web_library.faces[names[0]][1]) == res["person_id"]

    # a second cluster named with an existing name must ask (409), unless merge is explicit
    detail = err(api.post(f"/faces/clusters/{b_cluster}/label", {"name": "Ann"}), 409, "Conflict")
    assert "merge" in detail and res["person_id"] in detail
    assert person_of(api.settings, web_library.faces[names[1]][1]) is None, "a 409 changed nothing"
    merged = ok(api.post(f"/faces/clusters/{b_cluster}/label", {"name": "Ann", "merge": True}))
    assert merged["person_id"] == res["person_id"] and not merged["created"]
    # passing the person id is explicit too (no 409)
    c_cluster = cluster_of(api, web_library.faces[names[2]][1])
    assert ok(api.post(f"/faces/clusters/{c_cluster}/label", {"name": res["person_id"]}))["person_id"] == res["person_id"]

    ok_list = ok(api.get("/faces/clusters", params={"include_labeled": True}))
    labelled = [c for c in ok_list["items"] if c["labeled"]]
    assert [c["name"] for c in labelled] == ["Ann"] and labelled[0]["cluster_id"] == res["person_id"]

    # errors: unknown cluster, empty / id-shaped names, a body that is not JSON
    err(api.post(f"/faces/clusters/{a_cluster}/label", {"name": "Zed"}), 404, "NotFound")  # labelled: the cluster is gone
    free = ok(api.get("/faces/clusters", params={"min_size": 1}))["items"][0]["cluster_id"]
    err(api.post(f"/faces/clusters/{free}/label", {"name": "   "}), 400, "InvalidInput")
    err(api.post(f"/faces/clusters/{free}/label", {"name": "person_" + "0" * 32}), 404)
    err(api.client.post(f"{API}/faces/clusters/{free}/label", content=b"{not json", headers={**api.h(api.user), "content-type": "application/json"}), 400)

    # every change is an event whose actor says which token acted
    with session_scope(api.settings.sql_url) as s:
        actors = set(s.scalars(select(FaceAssignmentEvent.actor)))
    assert actors == {f"web:user:{fingerprint(api.user)}"}


PEOPLE_MIN = 3


def test_cluster_label_leaves_out_faces_that_are_not_the_same_person(api, web_library):
    name = list(web_library.faces)[2]
    fids = web_library.faces[name]
    cid = cluster_of(api, fids[0])
    res = ok(api.post(f"/faces/clusters/{cid}/label", {"name": "Cleo", "exclude_face_ids": [fids[1]]}))
    assert fids[1] not in res["changed"] or person_of(api.settings, fids[1]) is None
    assert [x["changed"] for x in res["excluded"]] == [[fids[1]]]
    with session_scope(api.settings.sql_url) as s:
        assert s.get(FaceRejection, (fids[1], res["person_id"])) is not None, "recorded as 'not this person'"
    assert person_of(api.settings, fids[0]) == res["person_id"]


def _named(api: Api, lib) -> dict[str, str]:
    """Name each faces_dev person's cluster after them; name → person id."""
    out = {}
    for name, fids in lib.faces.items():
        out[name] = ok(api.post(f"/faces/clusters/{cluster_of(api, fids[0])}/label", {"name": name}))["person_id"]
    return out


def test_person_api_paging_move_reject_split_rename_hide_merge_delete(api, web_library):
    pids = _named(api, web_library)
    a, b, c = list(web_library.faces)
    persons = ok(api.get("/persons", params={"limit": 2}))
    assert persons["total"] == 3 and len(persons["items"]) == 2
    assert ok(api.get("/persons", params={"limit": 2, "offset": 2}))["items"][0]["name"] == sorted(web_library.faces, key=str.casefold)[2]
    assert all(p["cover_face_id"] for p in persons["items"])
    names = ok(api.get("/names"))
    assert {n["name"] for n in names} == set(web_library.faces)

    pa = ok(api.get(f"/persons/{pids[a]}", params={"limit": 2}))
    assert pa["name"] == a and pa["faces"] >= IN and len(pa["items"]) == 2 and pa["cover_face_id"] == pa["items"][0]["face_id"]
    assert ok(api.get(f"/persons/{a}"))["person_id"] == pids[a], "an exact name works as a reference too"
    err(api.get("/persons/person_" + "f" * 32), 404, "NotFound")
    err(api.get("/persons/nobody-by-that-name"), 404)

    fa = web_library.faces[a]
    # move one face of A to B
    moved = ok(api.post(f"/faces/{fa[0]}/move", {"to": b}))
    assert moved["person_id"] == pids[b] and person_of(api.settings, fa[0]) == pids[b]
    err(api.post("/faces/no_such_face/move", {"to": b}), 404)
    # reject: "not B" (its current person)
    ok(api.post(f"/faces/{fa[0]}/reject", {}))
    assert person_of(api.settings, fa[0]) is None
    err(api.post(f"/faces/{fa[0]}/reject", {}), 400, "InvalidInput")  # no person now and none named
    ok(api.post(f"/faces/{fa[0]}/label", {"name": a}))
    ok(api.post(f"/faces/{fa[0]}/unassign"))
    assert person_of(api.settings, fa[0]) is None

    # split A into two new people at once (the design's face_groups)
    split = ok(api.post(f"/persons/{pids[a]}/split", {"face_groups": [[fa[1]], [fa[2]]], "names": ["A one", "A two"]}))
    assert len(split["person_ids"]) == 2
    assert [person_of(api.settings, f) for f in (fa[1], fa[2])] == split["person_ids"]
    err(api.post(f"/persons/{pids[a]}/split", {"face_groups": [[fa[3]]], "names": ["x", "y"]}), 400)
    err(api.post(f"/persons/{pids[a]}/split", {"face_groups": [[fa[3]], [fa[3]]], "names": ["x", "y"]}), 400)
    err(api.post(f"/persons/{pids[a]}/split", {"face_groups": [[fa[3]]], "names": [b]}), 409, "Conflict")
    err(api.post(f"/persons/{pids[a]}/split", {"face_groups": [[web_library.faces[b][1]]], "names": ["q"]}), 400)

    # rename, hide / unhide
    ok(api.post(f"/persons/{pids[c]}/rename", {"name": "Cee"}))
    assert ok(api.get(f"/persons/{pids[c]}"))["name"] == "Cee"
    err(api.post(f"/persons/{pids[c]}/rename", {"name": b}), 409, "Conflict")
    ok(api.post(f"/persons/{pids[c]}/hide"))
    assert pids[c] not in {p["person_id"] for p in ok(api.get("/persons"))["items"]}
    assert pids[c] in {p["person_id"] for p in ok(api.get("/persons", params={"include_hidden": True}))["items"]}
    err(api.post(f"/faces/{fa[3]}/move", {"to": pids[c]}), 409, "Conflict")  # hidden: unhide first
    ok(api.post(f"/persons/{pids[c]}/unhide"))

    # merge the split-off people back into A
    merged = ok(api.post("/persons/merge", {"sources": split["person_ids"], "target": pids[a]}))
    assert merged["person_id"] == pids[a] and sorted(merged["changed"]) == sorted([fa[1], fa[2]])
    err(api.post("/persons/merge", {"sources": [pids[a]], "target": pids[a]}), 400)
    err(api.post("/persons/merge", {"sources": [split["person_ids"][0]], "target": pids[a]}), 409)  # already merged
    err(api.post("/persons/merge", {"sources": [], "target": pids[a]}), 400)

    # delete: admin only, and the name is gone from the API afterwards
    err(api.delete(f"/persons/{pids[b]}", token="user"), 403, "Forbidden")
    err(api.delete(f"/persons/{pids[b]}", token=None), 401)
    ok(api.delete(f"/persons/{pids[b]}", token="admin"))
    err(api.get(f"/persons/{pids[b]}"), 404)
    assert b not in {n["name"] for n in ok(api.get("/names"))}
    events = ok(api.get("/events", params={"limit": 1000}))["items"]
    assert not any(b in str(e) for e in events if e["action"] == "delete_person"), "names never enter the log"
    assert {e["actor"] for e in events if e["action"] == "delete_person"} == {f"web:admin:{fingerprint(api.admin)}"}


IN = 4


def test_events_paging_and_undo(api, web_library):
    pids = _named(api, web_library)
    a, b, _c = list(web_library.faces)
    fa = web_library.faces[a]
    ok(api.post(f"/faces/{fa[0]}/move", {"to": b}))
    ev = ok(api.get("/events", params={"limit": 1}))
    assert ev["total"] > 1 and len(ev["items"]) == 1
    move = ev["items"][0]
    assert move["action"] == "reassign_face" and move["face_id"] == fa[0] and move["can_undo"]
    assert move["from_name"] == a and move["to_name"] == b
    ok(api.post(f"/events/{move['id']}/undo"))
    assert person_of(api.settings, fa[0]) == pids[a]
    err(api.post(f"/events/{move['id']}/undo"), 409, "Conflict")  # nothing left to undo
    err(api.post("/events/999999/undo"), 404)

    ok(api.post(f"/persons/{pids[b]}/hide"))
    hide = ok(api.get("/events", params={"limit": 1}))["items"][0]
    ok(api.post(f"/events/{hide['id']}/undo"))
    assert ok(api.get(f"/persons/{pids[b]}"))["status"] == "active"

    split = ok(api.post(f"/persons/{pids[a]}/split", {"face_groups": [[fa[1]]], "names": ["Other"]}))
    person_event = next(e for e in ok(api.get("/events", params={"limit": 5}))["items"] if e["action"] == "split_person" and not e["face_id"])
    ok(api.post(f"/events/{person_event['id']}/undo"))
    assert person_of(api.settings, fa[1]) == pids[a]
    assert ok(api.get(f"/persons/{split['person_ids'][0]}"))["status"] == "merged"

    ok(api.post(f"/faces/{fa[2]}/reject", {}))
    rej = ok(api.get("/events", params={"limit": 1}))["items"][0]
    ok(api.post(f"/events/{rej['id']}/undo"))
    assert person_of(api.settings, fa[2]) == pids[a]

    since = ok(api.get("/events", params={"since_id": rej["id"]}))
    assert since["items"] and all(e["id"] > rej["id"] for e in since["items"])
    assert all(e["reason"] and e["reason"].startswith("undo of event") for e in since["items"])


def test_thumbnails_upright_cached_and_photos_by_id_only(api, web_library):
    face = web_library.rotated_face
    r = ok(api.get(f"/faces/{face}/thumb"))
    assert r.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(r.content))
    assert max(thumb.size) == api.settings.web_thumb_size
    # The stored box is in upright coordinates: the thumbnail matches a crop of the EXIF-corrected photo and not
    # one of the raw (sideways) pixels.
    with session_scope(api.settings.sql_url) as s:
        f = s.get(FaceInstance, face)
        box = (f.x1, f.y1, f.x2, f.y2)
    raw = Image.open(web_library.rotated_path).convert("RGB")
    upright = ImageOps.exif_transpose(raw)
    size = api.settings.web_thumb_size

    def diff(img):
        ref = crop_face(img, box, size).resize(thumb.size)
        return float(np.abs(np.asarray(ref, float) - np.asarray(thumb.convert("RGB"), float)).mean())

    assert diff(upright) < 8 < diff(raw), (diff(upright), diff(raw))
    cached = list((api.settings.web_dir / "thumbs").rglob("*.jpg"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    assert ok(api.get(f"/faces/{face}/thumb")).content == r.content
    assert cached[0].stat().st_mtime_ns == before, "served from the disk cache"
    err(api.get("/faces/no_such_face/thumb"), 404)

    with session_scope(api.settings.sql_url) as s:
        image_id = s.get(FaceInstance, face).image_id
    p = ok(api.get(f"/photos/{image_id}"))
    assert p.headers["content-type"] == "image/jpeg"
    photo = Image.open(io.BytesIO(p.content))
    assert photo.size == upright.size, "the photo is served upright"
    faces = ok(api.get(f"/photos/{image_id}/faces"))
    assert face in {f["face_id"] for f in faces}
    err(api.get("/photos/not_an_image_id"), 404)
    err(api.get("/photos/not_an_image_id/faces"), 404)


@pytest.mark.parametrize("path", [
    "/api/v1/photos/..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/v1/photos/%2Fetc%2Fpasswd",
    "/api/v1/photos/../../etc/passwd",
    "/api/v1/faces/..%2Fface_pipeline.sqlite/thumb",
    "/api/v1/faces/%2e%2e%2f%2e%2e%2fweb%2ftokens.json/thumb",
    "/static/../app.py",
    "/static/..%2Fapp.py",
    "/static/%2e%2e/routes_api.py",
    "/static/..%2F..%2Fsettings.py",
])
def test_no_path_traversal(web_library, tmp_path, monkeypatch, path):
    from face_pipeline_tests.conftest import _clear_face_env
    from face_pipeline_tests.web.conftest import copy_home

    _clear_face_env(monkeypatch)
    settings = Settings(home=copy_home(web_library, tmp_path))
    client = TestClient(create_app(settings), base_url=BASE)
    r = client.get(path)
    assert r.status_code in (400, 404), (path, r.status_code)
    assert b"root:" not in r.content and b"SQLite" not in r.content and b"import" not in r.content


def test_auth_loopback_remote_cookie_csrf_and_admin(web_library, tmp_path, monkeypatch):
    from face_pipeline_tests.conftest import _clear_face_env
    from face_pipeline_tests.web.conftest import copy_home

    _clear_face_env(monkeypatch)
    home = copy_home(web_library, tmp_path)
    settings = Settings(home=home, web_token="user-token-123456", web_admin_token="admin-token-123456")
    app = create_app(settings)
    c = TestClient(app, base_url=BASE)
    assert app.state.tokens.generated == (), "configured tokens are used, nothing generated"
    # loopback: reads open, writes need a token
    assert c.get(API + "/persons").status_code == 200
    assert c.get("/").status_code == 200
    assert c.post(API + "/persons/x/hide").status_code == 401
    assert c.get(API + "/whoami", headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    assert c.get(API + "/whoami", headers={"Authorization": "Bearer user-token-123456"}).json()["role"] == "user"

    # the page's sign-in: HttpOnly, SameSite=Strict cookie; changes also need the CSRF token rendered in the page
    r = c.post("/login", data={"token": "wrong", "next": "/"}, follow_redirects=False)
    assert r.status_code == 401
    r = c.post("/login", data={"token": "user-token-123456", "next": "https://evil.example/"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/", "no open redirect"
    cookie = r.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    c.cookies.set(COOKIE, "user-token-123456")
    page = c.get("/").text
    csrf = app.state.tokens.csrf_for("user-token-123456")
    assert f'content="{csrf}"' in page
    cid = c.get(API + "/faces/clusters").json()["items"][0]["cluster_id"]
    assert c.post(f"{API}/faces/clusters/{cid}/label", json={"name": "Zoe"}).status_code == 403, "cookie without CSRF"
    assert c.post(f"{API}/faces/clusters/{cid}/label", json={"name": "Zoe"}, headers={CSRF_HEADER: "nope"}).status_code == 403
    assert c.post(f"{API}/faces/clusters/{cid}/label", json={"name": "Zoe"},
                  headers={CSRF_HEADER: csrf, "Origin": "https://evil.example"}).status_code == 403
    r = c.post(f"{API}/faces/clusters/{cid}/label", json={"name": "Zoe"}, headers={CSRF_HEADER: csrf, "Origin": BASE})
    assert r.status_code == 200, r.text
    pid = r.json()["person_id"]
    # the user token may not delete, train or re-cluster
    h = {CSRF_HEADER: csrf}
    assert c.delete(f"{API}/persons/{pid}", headers=h).status_code == 403
    assert c.post(f"{API}/faces/train", json={}, headers=h).status_code == 403
    assert c.post(f"{API}/faces/cluster/dual", json={}, headers=h).status_code == 403
    out = c.post("/logout", follow_redirects=False)
    assert out.status_code == 303 and f"{COOKIE}=" in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
    c.cookies.clear()
    assert c.get(API + "/whoami").json()["role"] == "anonymous"

    # bound elsewhere: every request needs a token, the page asks for it
    remote = TestClient(create_app(Settings(home=home, web_host="0.0.0.0", web_token="user-token-123456",
                                            web_admin_token="admin-token-123456")), base_url="http://photos.example")
    assert remote.get(API + "/persons").status_code == 401
    assert remote.get(API + f"/faces/{web_library.rotated_face}/thumb").status_code == 401
    assert remote.get("/").status_code == 401 and 'name="token"' in remote.get("/").text
    assert remote.get(API + "/persons", headers={"Authorization": "Bearer user-token-123456"}).status_code == 200

    # DNS rebinding: on loopback, another host name is refused even for reads
    assert TestClient(app, base_url="http://evil.example").get(API + "/persons").status_code == 400

    with pytest.raises(ValueError):
        create_app(Settings(home=home, web_token="same-token-1", web_admin_token="same-token-1"))


def test_generated_tokens_are_private_and_stable(web_library, tmp_path, monkeypatch):
    from face_pipeline_tests.conftest import _clear_face_env
    from face_pipeline_tests.web.conftest import copy_home

    _clear_face_env(monkeypatch)
    settings = Settings(home=copy_home(web_library, tmp_path))
    first = create_app(settings).state.tokens
    assert set(first.generated) == {"user", "admin"} and first.user != first.admin and len(first.user) >= 24
    f = settings.web_dir / "tokens.json"
    assert f.stat().st_mode & 0o077 == 0, "only the owner may read the tokens"
    again = create_app(settings).state.tokens
    assert again.generated == () and (again.user, again.admin) == (first.user, first.admin)


def test_find_and_search_uploads(api, web_library):
    pids = _named(api, web_library)
    name = list(web_library.faces)[0]
    photo = web_library.outside[name].read_bytes()
    found = ok(api.client.post(API + "/find", files={"photo": ("x.jpg", photo, "image/jpeg")}))
    assert found and any(m["person_id"] == pids[name] and m["name"] == name for m in found), found
    hits = ok(api.client.post(API + "/search", files={"photo": ("x.jpg", photo, "image/jpeg")}, data={"limit": "3"}))
    assert hits and len([h for h in hits if h["query_face_index"] == 0]) <= 3
    assert any(h["person_id"] == pids[name] for h in hits)

    # bad uploads: one line, right status, nothing kept
    err(api.client.post(API + "/find", files={"photo": ("x.jpg", b"", "image/jpeg")}), 400)
    err(api.client.post(API + "/find", files={"photo": ("x.txt", b"hello, not an image", "text/plain")}), 400, "InvalidInput")
    err(api.client.post(API + "/find", files={"photo": ("x.jpg", photo[: len(photo) // 2], "image/jpeg")}), 400)
    err(api.client.post(API + "/find"), 400)  # no file at all
    err(api.client.post(API + "/search", files={"photo": ("x.jpg", photo, "image/jpeg")}, data={"limit": "0"}), 400)
    buf = io.BytesIO()
    Image.new("L", (7000, 7000)).save(buf, "PNG")  # 49 MP of black: small file, too many pixels
    assert len(buf.getvalue()) < api.settings.web_max_upload_bytes
    detail = err(api.client.post(API + "/find", files={"photo": ("big.png", buf.getvalue(), "image/png")}), 400)
    assert "pixels" in detail
    assert not list((api.settings.web_dir / "uploads").glob("*")), "uploads are deleted after use"


def test_upload_size_limit(web_library, tmp_path, monkeypatch):
    from face_pipeline_tests.conftest import _clear_face_env
    from face_pipeline_tests.web.conftest import copy_home

    _clear_face_env(monkeypatch)
    settings = Settings(home=copy_home(web_library, tmp_path), web_max_upload_bytes=1000)
    c = TestClient(create_app(settings), base_url=BASE)
    r = c.post(API + "/find", files={"photo": ("x.jpg", b"\xff" * 200_000, "image/jpeg")})
    assert r.status_code == 413 and r.json()["error"] == "TooLarge"


def test_health_status_and_page_escapes_names(api, web_library):
    fids = next(iter(web_library.faces.values()))
    evil = '<script>alert("x")</script>'
    ok(api.post(f"/faces/clusters/{cluster_of(api, fids[0])}/label", {"name": evil}))
    h = ok(api.get("/health"))
    assert h["faces"] > 30 and h["named_by_people"] >= 4 and h["noise"] >= 1 and h["training"] is None
    assert h["unknown_clusters"] >= 1
    assert ok(api.get("/runs/latest"))["run"] is None
    err(api.get("/runs/00000000-0000-0000-0000-000000000000"), 404)

    page = api.client.get("/")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    pid = ok(api.get("/persons"))["items"][0]["person_id"]
    person_page = api.client.get(f"/person/{pid}")
    assert person_page.status_code == 200 and "<script>alert" not in person_page.text
    assert api.client.get("/person/person_" + "0" * 32).status_code == 404
    assert "<script>alert" not in str(ok(api.get("/events"))) or True  # JSON carries it as data, rendered as text by the page


def make_suggestions(settings: Settings, lib, pids: dict[str, str]) -> None:
    """Questions as organise stores them (core.suggestions.replace_pipeline_suggestions): for the faces of the
    first person, "is this <them>?" after those faces were unassigned; and "are these two the same person?"."""
    from face_pipeline.core.db import session_scope as scope
    from face_pipeline.core.suggestions import Suggestion, replace_pipeline_suggestions

    a, b, c = list(lib.faces)
    with scope(settings.sql_url) as s:
        n = replace_pipeline_suggestions(s, [
            Suggestion("face_is_person", (lib.faces[a][0],), person_id=pids[a], score=0.38, bar=0.40, evidence_face_id=lib.faces[a][2]),
            Suggestion("face_is_person", (lib.faces[a][1],), person_id=pids[a], score=0.30, bar=0.40),
            Suggestion("same_person", (), person_id=pids[b], other_person_id=pids[c], score=0.35, bar=0.40),
        ])
    assert n == 3


def test_suggestion_endpoints(api, web_library):
    pids = _named(api, web_library)
    a, b, c = list(web_library.faces)
    fa = web_library.faces[a]
    for f in fa[:2]:
        ok(api.post(f"/faces/{f}/unassign"))
    make_suggestions(api.settings, web_library, pids)

    items = ok(api.get("/suggestions"))
    assert len(items) == 3 and {i["kind"] for i in items} == {"face_is_person", "same_person"}
    assert [i["id"] for i in items if i["kind"] == "face_is_person"] == sorted(
        [i["id"] for i in items if i["kind"] == "face_is_person"], key=lambda x: -next(j["priority"] for j in items if j["id"] == x))
    face_q = next(i for i in items if i["kind"] == "face_is_person" and i["face_ids"] == [fa[0]])
    assert face_q["person_name"] == a and face_q["person_cover_face_id"] and face_q["question"] == f"Is this {a}?"
    assert "photo_path" not in str(face_q), "no file paths over HTTP"
    # beside the question, the photo of the candidate the evidence points at (while it is still theirs)
    assert face_q["evidence_face_id"] == fa[2] and face_q["evidence_face"]["person_id"] == pids[a]
    assert next(i for i in items if i["kind"] == "face_is_person" and i["face_ids"] == [fa[1]])["evidence_face_id"] is None
    page = api.client.get("/")
    card = page.text.split(f'data-suggestion-id="{face_q["id"]}"', 1)[1].split('class="actions"', 1)[0]
    assert f"/api/v1/faces/{fa[2]}/thumb" in card and "looks like this photo" in card
    merge_q = next(i for i in items if i["kind"] == "same_person")
    assert {merge_q["person_name"], merge_q["other_person_name"]} == {b, c}
    assert len(ok(api.get("/suggestions", params={"kind": "same_person"}))) == 1
    assert ok(api.get(f"/suggestions/{face_q['id']}"))["face_ids"] == [fa[0]]
    assert ok(api.get("/health"))["suggested"] == 3
    err(api.get("/suggestions", params={"status": "bogus"}), 400)
    err(api.get("/suggestions/999999"), 404)
    err(api.post("/suggestions/999999/accept", {}), 404)
    err(api.post("/suggestions/999999/reject"), 404)
    err(api.post(f"/suggestions/{face_q['id']}/accept", {}, token=None), 401)

    # yes: the face is labelled through the label operations, the event says which token answered
    res = ok(api.post(f"/suggestions/{face_q['id']}/accept", {}))
    assert person_of(api.settings, fa[0]) == pids[a] and fa[0] in res["changed"]
    # no: "not this person" is recorded and the question is gone
    other = next(i for i in items if i["kind"] == "face_is_person" and i["face_ids"] == [fa[1]])
    ok(api.post(f"/suggestions/{other['id']}/reject"))
    with session_scope(api.settings.sql_url) as s:
        assert s.get(FaceRejection, (fa[1], pids[a])) is not None
        actors = set(s.scalars(select(FaceAssignmentEvent.actor).where(FaceAssignmentEvent.face_id.in_(fa[:2]))))
    assert actors == {f"web:user:{fingerprint(api.user)}"}
    # the same person: accepting merges them
    ok(api.post(f"/suggestions/{merge_q['id']}/accept", {}))
    statuses = {ok(api.get(f"/persons/{pids[x]}"))["status"] for x in (b, c)}
    assert statuses == {"active", "merged"}
    assert ok(api.get("/suggestions")) == [] and ok(api.get("/health"))["suggested"] == 0
    err(api.post(f"/suggestions/{face_q['id']}/accept", {}), 409)  # answered already

    page = api.client.get("/")
    assert page.status_code == 200 and "No open questions." in page.text


def test_runs_launched_from_the_web_appear_in_the_dagster_instance(api):
    import dagster as dg

    err(api.post("/faces/cluster/dual", {"unknown_method": "nonsense"}, token="admin"), 400)
    launched = ok(api.post("/faces/cluster/dual", {"unknown_min_size": 2}, token="admin"), 202)
    run_id = launched["run_id"]
    assert launched["job"] == "organize_library" and launched["dagster_url"].endswith(f"/runs/{run_id}")
    deadline = time.time() + 240
    status = None
    while time.time() < deadline:
        status = ok(api.get(f"/runs/{run_id}"))
        if status["status"] in ("SUCCESS", "FAILURE", "CANCELED", "UNKNOWN"):
            break
        time.sleep(1)
    assert status and status["status"] == "SUCCESS", status
    assert status["tags"]["face_pipeline/launched_by"] == f"web:admin:{fingerprint(api.admin)}"
    with dg.DagsterInstance.from_config(str(api.settings.dagster_home)) as instance:  # what the Dagster UI reads
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.job_name == "organize_library" and run.is_success
    assert ok(api.get("/runs/latest"))["run"]["run_id"] == run_id


def _wait_run(api: Api, run_id: str, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    status: dict = {}
    while time.time() < deadline:
        status = ok(api.get(f"/runs/{run_id}"))
        if status["status"] in ("SUCCESS", "FAILURE", "CANCELED", "UNKNOWN"):
            return status
        time.sleep(1)
    raise AssertionError(f"run {run_id} did not finish: {status}")


@pytest.mark.parametrize("backend", ["sqlite"])  # the run path is the same on PostgreSQL (see the organize run test)
def test_training_launched_from_the_web(api, web_library):
    import dagster as dg

    _named(api, web_library)
    err(api.post("/faces/train", {"epochs": 0}, token="admin"), 400)
    err(api.post("/faces/train", {"epochs": 3}, token="user"), 403)
    launched = ok(api.post("/faces/train", {"epochs": 3}, token="admin"), 202)
    assert launched["job"] == "train_projection"
    status = _wait_run(api, launched["run_id"])
    with dg.DagsterInstance.from_config(str(api.settings.dagster_home)) as instance:
        run = instance.get_run_by_id(launched["run_id"])
        assert run is not None and run.job_name == "train_projection"
    # the run's answer, as the CLI's `train` reports it: trained, refused by the gate, or not enough labels
    outcome = status["training"]
    assert outcome and outcome["status"] in ("trained", "refused", "not_enough_labels"), status
    training = ok(api.get("/health"))["training"]
    if outcome["status"] == "not_enough_labels":
        assert training is None and outcome.get("missing"), outcome
    else:
        assert training is not None and training["verdict"] in ("promoted and live", "promoted", "not promoted"), (outcome, training)
    print("training outcome:", outcome["status"], outcome.get("missing") or "")
