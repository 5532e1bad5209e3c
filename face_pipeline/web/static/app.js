// The people page's buttons. Every change is one call to /api/v1 (the same label operations as the CLI); the token
// travels in the HttpOnly cookie set at sign-in, and each state-changing call carries the page's CSRF token.
// Names are only ever put into the page as text (textContent), never as HTML.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;

function flash(message, bad) {
  const el = document.getElementById("flash");
  el.textContent = message;
  el.className = "flash show" + (bad ? " bad" : "");
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { el.className = "flash"; }, bad ? 8000 : 3000);
}

class ApiError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(method, path, body) {
  if (!CSRF && method !== "GET") {
    throw new ApiError(401, "Sign in with your token (top right) to make changes.");
  }
  const opts = { method, credentials: "same-origin", headers: { "X-CSRF-Token": CSRF } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch("/api/v1" + path, opts);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok) throw new ApiError(resp.status, (data && data.detail) || resp.statusText);
  return data;
}

function summary(res) {
  const parts = [];
  for (const [key, label] of [["changed", "changed"], ["skipped", "kept (human label)"], ["rejected", "kept (rejected)"],
                              ["conflicts", "same-photo conflicts"], ["unassigned", "unassigned"]]) {
    if (res && res[key] && res[key].length) parts.push(res[key].length + " " + label);
  }
  return parts.join(", ") || "nothing to change";
}

async function act(fn, reload = true) {
  try {
    const res = await fn();
    if (res !== undefined) flash(summary(res));
    if (reload) setTimeout(() => location.reload(), 1200);  // long enough to read the message
    return res;
  } catch (e) {
    flash(e.message, true);
    return undefined;
  }
}

const enc = encodeURIComponent;
const selectedIn = (root) => Array.from(root.querySelectorAll("img.selectable.selected")).map((i) => i.dataset.faceId);

document.addEventListener("click", (ev) => {
  const img = ev.target.closest("img.selectable");
  if (img) { img.classList.toggle("selected"); }
});

// ---- unknown clusters ------------------------------------------------------------------------------------
async function nameCluster(card, merge) {
  const name = card.querySelector(".name-input").value.trim();
  if (!name) { flash("Type a name first.", true); return; }
  const body = { name, merge, exclude_face_ids: selectedIn(card) };
  try {
    const res = await api("POST", "/faces/clusters/" + enc(card.dataset.clusterId) + "/label", body);
    flash("Named " + name + ": " + summary(res));
    setTimeout(() => location.reload(), 600);
  } catch (e) {
    if (e.status === 409 && !merge) {
      if (confirm(e.message + "\n\nAdd these faces to the existing " + name + "?")) return nameCluster(card, true);
      return;
    }
    flash(e.message, true);
  }
}

for (const card of document.querySelectorAll(".cluster")) {
  card.querySelector(".name-button").addEventListener("click", () => nameCluster(card, false));
  card.querySelector(".name-input").addEventListener("keydown", (ev) => { if (ev.key === "Enter") nameCluster(card, false); });
  card.querySelector(".split-button").addEventListener("click", () => {
    const faces = selectedIn(card);
    const name = card.querySelector(".split-name").value.trim();
    if (!faces.length || !name) { flash("Click the faces that are someone else, and type their name.", true); return; }
    act(async () => { let last; for (const f of faces) last = await api("POST", "/faces/" + enc(f) + "/label", { name }); return last; });
  });
}

// ---- review queue (y / n / s) and merge suggestions --------------------------------------------------------
function currentSuggestion() { return document.querySelector("#review-queue .suggestion.current"); }

function advance(card) {
  const next = card.nextElementSibling;
  card.classList.remove("current");
  card.remove();
  if (next) { next.classList.add("current"); next.focus(); }
}

async function answer(card, what) {
  if (what === "skip") {
    const next = card.nextElementSibling;
    card.classList.remove("current");
    card.parentElement.appendChild(card);  // to the back of the queue
    const first = next || document.querySelector("#review-queue .suggestion");
    if (first) { first.classList.add("current"); first.focus(); }
    return;
  }
  let body;
  if (what === "accept" && card.dataset.needsName) {  // two unnamed groups: "the same person" needs a name
    const name = (prompt("Who is it? (name for both groups)") || "").trim();
    if (!name) return;
    body = { name };
  }
  try {
    const res = await api("POST", "/suggestions/" + enc(card.dataset.suggestionId) + "/" + what, body);
    flash((what === "accept" ? "Yes: " : "No: ") + summary(res));
    if (card.closest("#review-queue")) advance(card); else card.remove();
  } catch (e) { flash(e.message, true); }
}

for (const button of document.querySelectorAll(".suggestion button[data-answer]")) {
  button.addEventListener("click", () => answer(button.closest(".suggestion"), button.dataset.answer));
}

document.addEventListener("keydown", (ev) => {
  if (ev.target.matches("input, textarea, select") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const card = currentSuggestion();
  if (!card) return;
  const what = { y: "accept", n: "reject", s: "skip" }[ev.key.toLowerCase()];
  if (what) { ev.preventDefault(); answer(card, what); }
});

// ---- recent changes ------------------------------------------------------------------------------------------
for (const button of document.querySelectorAll("button.undo")) {
  // newest first, so a later change is undone before the one it followed
  button.addEventListener("click", () => act(async () => {
    let last; for (const id of button.dataset.eventIds.split(",")) last = await api("POST", "/events/" + enc(id) + "/undo");
    if (last && last.action === "unassign_face") { flash("Undone: the faces return to the unknown groups after the next re-cluster."); return undefined; }
    return last;
  }));
}

// ---- runs (admin) ------------------------------------------------------------------------------------------
async function launch(path, label) {
  try {
    const run = await api("POST", path, {});
    flash(label + " started: run " + run.run_id.slice(0, 8));
    setTimeout(() => location.reload(), 1500);
  } catch (e) { flash(e.message, true); }
}
const recluster = document.getElementById("recluster");
if (recluster) recluster.addEventListener("click", () => launch("/faces/cluster/dual", "Re-clustering"));
const train = document.getElementById("train");
if (train) train.addEventListener("click", () => launch("/faces/train", "Training"));

// ---- a person's page -----------------------------------------------------------------------------------------
const personCard = document.getElementById("person");
if (personCard) {
  const pid = personCard.dataset.personId;
  const value = (id) => document.getElementById(id).value.trim();
  const faces = () => selectedIn(personCard);
  const needFaces = () => { if (!faces().length) { flash("Select faces first (click them).", true); return false; } return true; };
  const on = (id, fn) => { const el = document.getElementById(id); if (el) el.addEventListener("click", fn); };

  on("rename", () => act(() => api("POST", "/persons/" + enc(pid) + "/rename", { name: value("rename-input") })));
  on("merge", () => act(async () => {
    const res = await api("POST", "/persons/merge", { sources: [pid], target: value("merge-input") });
    setTimeout(() => { location.href = "/person/" + enc(res.person_id); }, 600);
    return res;
  }, false));
  on("hide", () => act(() => api("POST", "/persons/" + enc(pid) + "/hide")));
  on("unhide", () => act(() => api("POST", "/persons/" + enc(pid) + "/unhide")));
  on("delete", () => {
    if (!confirm("Erase this person? Their name goes; their faces become unknown again.")) return;
    act(async () => { const r = await api("DELETE", "/persons/" + enc(pid)); setTimeout(() => { location.href = "/"; }, 600); return r; }, false);
  });
  on("move", () => needFaces() && act(async () => {
    let last; for (const f of faces()) last = await api("POST", "/faces/" + enc(f) + "/move", { to: value("move-input") }); return last;
  }));
  on("reject", () => needFaces() && act(async () => {
    let last; for (const f of faces()) last = await api("POST", "/faces/" + enc(f) + "/reject", { person: pid }); return last;
  }));
  on("split", () => needFaces() && act(() => api("POST", "/persons/" + enc(pid) + "/split",
    { face_groups: [faces()], names: [value("split-input")] })));
  on("select-none", () => personCard.querySelectorAll("img.selected").forEach((i) => i.classList.remove("selected")));
}
