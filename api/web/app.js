// Turnstile's web client: plain JavaScript, no build step, served from the
// binary. The access token lives in memory only; the refresh token in
// sessionStorage (this tab, until it closes), so a reload keeps the user
// signed in. The live queue comes from GET /v1/events, read over fetch so
// the token travels in the Authorization header, never in a URL.
"use strict";

const $ = (id) => document.getElementById(id);
const REFRESH_KEY = "turnstile.refresh";

const auth = { access: "", email: "", refreshing: null };
const model = { requests: new Map(), session: null };
let stream = null; // AbortController of the open event stream
let lastEventID = "";

// ---- API calls --------------------------------------------------------

class APIError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function call(method, path, body, retried) {
  const headers = { "Content-Type": "application/json" };
  if (auth.access) headers.Authorization = "Bearer " + auth.access;
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 401 && auth.access && !retried && (await refresh())) {
    return call(method, path, body, true);
  }
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    const e = (data && data.error) || {};
    throw new APIError(resp.status, e.code || "error", e.message || resp.statusText);
  }
  return data;
}

function keep(pair) {
  auth.access = pair.access_token;
  sessionStorage.setItem(REFRESH_KEY, pair.refresh_token);
}

// refresh trades the refresh token for a new pair; one at a time (a spent
// refresh token reused revokes its family).
function refresh() {
  if (auth.refreshing) return auth.refreshing;
  const token = sessionStorage.getItem(REFRESH_KEY);
  if (!token) return Promise.resolve(false);
  auth.refreshing = fetch("/v1/auth/refresh", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ refresh_token: token }),
  }).then(async (resp) => {
    if (!resp.ok) { signedOut("Your sign-in ended; sign in again."); return false; }
    keep(await resp.json());
    return true;
  }).catch(() => false).finally(() => { auth.refreshing = null; });
  return auth.refreshing;
}

// ---- signing in and out -----------------------------------------------

async function signIn(register) {
  const email = $("email").value.trim(), password = $("password").value;
  $("auth-error").textContent = "";
  try {
    if (register) await call("POST", "/v1/auth/register", { email, password });
    keep(await call("POST", "/v1/auth/login", { email, password }));
    auth.email = email;
    sessionStorage.setItem(REFRESH_KEY + ".email", email);
    await signedIn();
  } catch (e) {
    $("auth-error").textContent = e.message;
  }
}

async function signedIn() {
  $("auth").hidden = true;
  $("app").hidden = false;
  $("who").hidden = false;
  $("who-email").textContent = auth.email;
  $("password").value = "";
  const { types } = await call("GET", "/v1/types");
  const sel = $("type");
  sel.replaceChildren(...types.map((t) => new Option(t, t, t === "sleep", t === "sleep")));
  const { requests } = await call("GET", "/v1/requests?limit=20");
  for (const r of requests) model.requests.set(r.id, Object.assign(model.requests.get(r.id) || {}, r));
  render();
  openStream();
}

function signedOut(message) {
  if (stream) stream.abort();
  stream = null;
  lastEventID = "";
  auth.access = "";
  sessionStorage.removeItem(REFRESH_KEY);
  model.requests.clear();
  $("app").hidden = true;
  $("who").hidden = true;
  $("auth").hidden = false;
  $("auth-error").textContent = message || "";
  $("email").focus();
}

async function signOut() {
  try { await call("POST", "/v1/auth/logout"); } catch (e) { /* signed out either way */ }
  signedOut("Signed out.");
}

// ---- the event stream -------------------------------------------------

async function openStream() {
  if (stream) stream.abort();
  const ctl = new AbortController();
  stream = ctl;
  const headers = { Authorization: "Bearer " + auth.access };
  if (lastEventID) headers["Last-Event-ID"] = lastEventID;
  let ended = "";
  try {
    const resp = await fetch("/v1/events", { headers, signal: ctl.signal });
    if (resp.status === 401) { ended = "token_expired"; throw new Error("unauthorized"); }
    if (!resp.ok) throw new Error("status " + resp.status);
    $("stream-state").textContent = "live";
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const ev = parseFrame(frame);
        if (!ev) continue;
        if (ev.id) lastEventID = ev.id;
        if (ev.event === "end") { ended = ev.data.reason; break; }
        onEvent(ev.event, ev.data);
      }
      if (ended) break;
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
  }
  if (stream !== ctl) return;
  $("stream-state").textContent = "reconnecting…";
  if (ended === "token_revoked") { signedOut("Your sign-in ended; sign in again."); return; }
  if (ended === "token_expired" && !(await refresh())) return;
  setTimeout(() => { if (stream === ctl) openStream(); }, ended ? 0 : 1000);
}

function parseFrame(frame) {
  const ev = { event: "message", id: "", data: "" };
  for (const line of frame.split("\n")) {
    if (line.startsWith(":")) continue; // a heartbeat
    const c = line.indexOf(":");
    const field = c < 0 ? line : line.slice(0, c);
    const value = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
    if (field === "event") ev.event = value;
    else if (field === "id") ev.id = value;
    else if (field === "data") ev.data += value;
  }
  if (!ev.data) return null;
  try { ev.data = JSON.parse(ev.data); } catch (e) { return null; }
  return ev;
}

function onEvent(kind, data) {
  if (kind === "request") {
    const prev = model.requests.get(data.id);
    model.requests.set(data.id, data);
    if (!prev || prev.status !== data.status) announce(`${label(data)} is ${data.status}`);
  } else if (kind === "positions") {
    for (const p of data.positions) {
      const r = model.requests.get(p.id);
      if (r && r.status === "queued") { r.position = p.position; r.eta = p.eta; }
    }
  } else if (kind === "session") {
    model.session = data;
  }
  render();
}

// ---- rendering --------------------------------------------------------

const label = (r) => `${r.type} ${r.id.slice(-6)}`;

function announce(text) { $("announce").textContent = text; }

function relative(iso) {
  if (!iso) return "";
  const s = Math.round((new Date(iso) - Date.now()) / 1000);
  if (s <= 0) return "any moment";
  return s < 90 ? `in ${s} s` : `in ${Math.round(s / 60)} min`;
}

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}

function button(text, title, onclick) {
  const b = el("button", { type: "button", textContent: text, className: "secondary" });
  b.setAttribute("aria-label", title);
  b.addEventListener("click", onclick);
  return b;
}

// sync makes container's children the rows of list, in order, reusing
// each request's row (so a focused button keeps its focus as events come).
function sync(container, list, prefix, build, update) {
  const want = new Set(list.map((r) => prefix + r.id));
  for (const child of [...container.children]) if (!want.has(child.id)) child.remove();
  list.forEach((r, i) => {
    let row = document.getElementById(prefix + r.id);
    if (!row) { row = build(r); row.id = prefix + r.id; }
    update(row, r);
    if (container.children[i] !== row) container.insertBefore(row, container.children[i] || null);
  });
}

function render() {
  const all = [...model.requests.values()];
  const running = all.filter((r) => r.status === "running");
  const waiting = all.filter((r) => r.status === "queued").sort((a, b) => (a.position || 1e9) - (b.position || 1e9) || a.id.localeCompare(b.id));
  const done = all.filter((r) => ["succeeded", "failed", "cancelled"].includes(r.status))
    .sort((a, b) => (b.finished_at || "").localeCompare(a.finished_at || "")).slice(0, 50);

  const run = $("running");
  run.className = running.length ? "" : "muted";
  if (!running.length) run.replaceChildren("Nothing is running.");
  else {
    if (!run.querySelector(".req-line")) run.replaceChildren();
    sync(run, running, "running-",
      () => el("div", { className: "req-line" }, el("span", { className: "req" }), " — ",
        el("span", { className: "elapsed" }), el("span", { className: "attempt" }), el("span", { className: "eta muted" })),
      (row, r) => {
        row.querySelector(".req").textContent = label(r);
        row.querySelector(".attempt").textContent = `, attempt ${Math.max(r.attempts, 1)}`;
        row.dataset.started = r.started_at || "";
        row.dataset.eta = r.eta || "";
      });
  }

  sync($("waiting"), waiting, "waiting-",
    (r) => el("li", { className: "waiting" },
      el("span", { className: "req" }), " ", el("span", { className: "position" }), " ",
      el("span", { className: "eta muted" }), " ",
      button("Cancel", `Cancel ${label(r)}`, () => act("DELETE", `/v1/requests/${r.id}`))),
    (row, r) => {
      row.querySelector(".req").textContent = label(r);
      row.querySelector(".position").textContent = r.position ? `#${r.position}` : "";
      row.dataset.eta = r.eta || "";
    });
  $("waiting-empty").hidden = waiting.length > 0;

  sync($("history").tBodies[0], done, "done-",
    () => el("tr", {}, el("td", { className: "req" }), el("td", { className: "status" }),
      el("td", { className: "attempts" }), el("td", { className: "outcome" }), el("td", { className: "actions" })),
    (row, r) => {
      const outcome = r.error ? r.error : r.result === null || r.result === undefined ? "" : JSON.stringify(r.result);
      row.querySelector(".req").textContent = label(r);
      const st = row.querySelector(".status");
      st.textContent = r.status;
      st.className = "status status-" + r.status;
      row.querySelector(".attempts").textContent = String(r.attempts);
      row.querySelector(".outcome").textContent = outcome;
      const actions = row.querySelector(".actions");
      const requeueable = r.status === "failed" || r.status === "cancelled";
      if (requeueable && !actions.firstChild) {
        actions.append(button("Requeue", `Requeue ${label(r)}`, () => act("POST", `/v1/requests/${r.id}/requeue`)));
      } else if (!requeueable) actions.replaceChildren();
    });

  const s = model.session;
  $("session-state").textContent = s ? s.state + (s.paused ? " (paused)" : "") : "…";
  tick();
}

// tick refreshes the texts that move with the clock: elapsed times, ETAs.
function tick() {
  for (const row of document.querySelectorAll("#running .req-line")) {
    const started = row.dataset.started;
    row.querySelector(".elapsed").textContent = started
      ? `running ${Math.max(0, Math.round((Date.now() - new Date(started)) / 1000))} s` : "";
    row.querySelector(".eta").textContent = row.dataset.eta ? ` (done ${relative(row.dataset.eta)})` : "";
  }
  for (const row of document.querySelectorAll("#waiting li")) {
    row.querySelector(".eta").textContent = row.dataset.eta ? `starts ${relative(row.dataset.eta)}` : "";
  }
}

async function act(method, path) {
  try {
    const r = await call(method, path);
    if (r && r.id) model.requests.set(r.id, Object.assign(model.requests.get(r.id) || {}, r));
    render();
  } catch (e) {
    announce(e.message);
    alert(e.message);
  }
}

// ---- submitting -------------------------------------------------------

async function submit() {
  const field = $("payload"), err = $("payload-error");
  field.removeAttribute("aria-invalid");
  err.textContent = "";
  let payload;
  try {
    payload = field.value.trim() === "" ? null : JSON.parse(field.value);
  } catch (e) {
    field.setAttribute("aria-invalid", "true");
    err.textContent = "Not valid JSON: " + e.message;
    field.focus();
    return;
  }
  try {
    const r = await call("POST", "/v1/requests", { type: $("type").value, payload });
    if (!model.requests.has(r.id)) model.requests.set(r.id, r);
    announce(`${label(r)} accepted at position ${r.position || "?"}`);
    render();
  } catch (e) {
    // The server's validation error, shown at the field.
    field.setAttribute("aria-invalid", "true");
    err.textContent = e.message;
    field.focus();
  }
}

// ---- wiring -----------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("auth-form").addEventListener("submit", (e) => { e.preventDefault(); signIn(false); });
  $("register").addEventListener("click", () => signIn(true));
  $("sign-out").addEventListener("click", signOut);
  $("submit-form").addEventListener("submit", (e) => { e.preventDefault(); submit(); });
  $("disconnect").addEventListener("click", () => act("DELETE", "/v1/session"));
  setInterval(tick, 1000);
  const email = sessionStorage.getItem(REFRESH_KEY + ".email");
  if (sessionStorage.getItem(REFRESH_KEY)) {
    refresh().then((ok) => { if (ok) { auth.email = email || ""; signedIn(); } });
  }
});
