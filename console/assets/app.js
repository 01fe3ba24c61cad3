// The console's pages: plain DOM, no framework, nothing but this origin. Every value an
// API returns is put on the page as text (never as HTML): event payloads are anyone's.
"use strict";

const state = { token: sessionStorage.getItem("threadline-token") || "", after: null, pageStart: null };

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const c of cells) {
    const td = el("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === undefined || c === null ? "" : String(c);
    tr.appendChild(td);
  }
  return tr;
}

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  opts.headers = Object.assign({ authorization: "Bearer " + state.token }, opts.headers);
  const response = await fetch(path, opts);
  if (!response.ok) {
    let detail = response.status + " " + response.statusText;
    try { const p = await response.json(); detail = [p.title, p.detail].filter(Boolean).join(": ") || detail; } catch (_) {}
    throw new Error(detail);
  }
  return response;
}

function show(tab) {
  for (const section of document.querySelectorAll("section.tab")) section.hidden = section.id !== tab;
  for (const b of document.querySelectorAll("nav button[data-tab]")) b.classList.toggle("active", b.dataset.tab === tab);
  if (tab === "events") loadEvents(null);
  if (tab === "status") loadStatus();
  if (tab === "webhooks") loadEndpoints();
}

async function signIn() {
  state.token = document.getElementById("token").value.trim();
  const error = document.getElementById("signin-error");
  error.textContent = "";
  try {
    // A replay of nothing tells whether the token reads this tenant's events.
    await api("/api/queries/v1/audit/events?types=SubjectErased&until=0.0");
  } catch (e) {
    error.textContent = "Not signed in: " + e.message;
    return;
  }
  sessionStorage.setItem("threadline-token", state.token);
  document.getElementById("signin").hidden = true;
  document.getElementById("nav").hidden = false;
  show("events");
}

function signOut() {
  sessionStorage.removeItem("threadline-token");
  location.reload();
}

// One page of the tenant's replay: its first `size` events after `after`, then the
// stream is dropped (the API streams all of them; a page reads only what it shows).
async function readPage(after, types, size) {
  const params = new URLSearchParams();
  if (after) params.set("after", after);
  if (types) params.set("types", types);
  const controller = new AbortController();
  const response = await api("/api/queries/v1/audit/events?" + params, { signal: controller.signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const events = [];
  let buffered = "";
  try {
    while (events.length < size) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0 && events.length < size) {
        const line = JSON.parse(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
        if (line.event_id) events.push(line);
      }
    }
  } finally {
    controller.abort();
  }
  return events;
}

async function loadEvents(after) {
  const rows = document.getElementById("events-rows");
  const note = document.getElementById("events-note");
  const size = Number(document.getElementById("page-size").value);
  const types = document.getElementById("events-types").value.trim();
  note.textContent = "";
  try {
    const events = await readPage(after, types, size);
    rows.replaceChildren();
    for (const e of events) {
      const link = el("button", e.aggregate_type + "/" + e.aggregate_id, { class: "link aggregate-link" });
      link.addEventListener("click", () => loadAggregate(e.aggregate_type, e.aggregate_id));
      rows.appendChild(row([e.position, e.event_type, link, e.sequence, e.recorded_at]));
    }
    state.after = events.length ? events[events.length - 1].position : after;
    note.textContent = events.length < size ? "End of the stream." : "";
  } catch (e) {
    note.textContent = "The events could not be read: " + e.message;
  }
}

async function loadAggregate(type, id) {
  const box = document.getElementById("aggregate");
  box.hidden = false;
  document.getElementById("aggregate-title").textContent = type + " " + id;
  const history = document.getElementById("aggregate-history");
  history.replaceChildren();
  const text = await (await api("/api/queries/v1/audit/" + type + "/" + id + "/events")).text();
  const events = text.split("\n").filter(Boolean).map((l) => JSON.parse(l)).filter((l) => l.event_id);
  const select = document.getElementById("aggregate-version");
  const compare = document.getElementById("aggregate-compare");
  select.replaceChildren();
  compare.replaceChildren();
  for (const e of events) {
    history.appendChild(el("li", e.sequence + ". " + e.event_type + " at " + e.recorded_at));
    select.appendChild(el("option", e.sequence, { value: e.sequence }));
    compare.appendChild(el("option", e.sequence, { value: e.sequence }));
  }
  select.value = String(events.length);
  compare.value = String(Math.max(1, events.length - 1));
  const refresh = () => loadState(type, id, select.value, compare.value);
  select.onchange = refresh;
  compare.onchange = refresh;
  await refresh();
}

async function stateAt(type, id, version) {
  return (await api("/api/queries/v1/audit/" + type + "/" + id + "/state?version=" + version)).json();
}

// The state at `version`, and what differs from the state at `other`: each field whose
// value is not the same, as it was then and as it is at `version`.
async function loadState(type, id, version, other) {
  const [view, then] = await Promise.all([stateAt(type, id, version), stateAt(type, id, other)]);
  document.getElementById("aggregate-state").textContent = JSON.stringify(view, null, 2);
  const rows = document.getElementById("aggregate-diff");
  rows.replaceChildren();
  const now = view.state || {};
  const before = then.state || {};
  const fields = [...new Set([...Object.keys(before), ...Object.keys(now)])].sort();
  for (const field of fields) {
    const a = JSON.stringify(before[field]);
    const b = JSON.stringify(now[field]);
    if (a !== b) rows.appendChild(row([field, a === undefined ? "(none)" : a, b === undefined ? "(none)" : b]));
  }
  if (!rows.children.length) rows.appendChild(row(["(no difference)", "", ""]));
}

async function search(event) {
  event.preventDefault();
  const q = document.getElementById("search-q").value.trim();
  const hits = document.getElementById("search-hits");
  hits.replaceChildren();
  if (!q) return;
  try {
    const results = await (await api("/api/queries/v1/search?" + new URLSearchParams({ q }))).json();
    for (const h of results.items) {
      const li = el("li", null, { class: "hit" });
      li.appendChild(el("span", h.score.toFixed(3), { class: "score" }));
      li.appendChild(el("strong", h.title));
      li.appendChild(el("span", " (" + h.source.kind + " " + h.source.id + "): "));
      li.appendChild(el("span", h.snippet, { class: "snippet" }));
      hits.appendChild(li);
    }
    if (!results.items.length) hits.appendChild(el("li", "No hits."));
  } catch (e) {
    hits.appendChild(el("li", "Search failed: " + e.message, { class: "error" }));
  }
}

async function loadStatus() {
  const rows = document.getElementById("status-rows");
  const note = document.getElementById("status-note");
  rows.replaceChildren();
  try {
    const report = await (await api("/api/status")).json();
    const r = report.relay;
    const relayState = r.stuck ? "stuck: " + r.last_error : r.active ? "active" : "standby";
    rows.appendChild(row(["relay", relayState, r.lag_events + " events", r.parked, "", ""]));
    for (const p of report.projectors) {
      const s = p.status;
      if (!s) { rows.appendChild(row([p.name, "unreachable", "", "", "", ""])); continue; }
      const waiting = s.waiting_on ? "waiting on " + s.waiting_on : "consuming";
      rows.appendChild(row([p.name, waiting, s.lag_events + " events", s.parked, s.load.records_in_flight, s.generation]));
    }
  } catch (e) {
    note.textContent = "The status could not be read: " + e.message;
  }
}

async function redriveRelay() {
  const note = document.getElementById("status-note");
  try {
    await api("/api/commands/v1/admin/relay/redrive", { method: "POST" });
    note.textContent = "Re-drive requested.";
  } catch (e) {
    note.textContent = "Re-drive refused: " + e.message;
  }
}

async function loadEndpoints() {
  const list = document.getElementById("endpoints");
  list.replaceChildren();
  try {
    const page = await (await api("/api/queries/v1/webhooks/endpoints?limit=100")).json();
    for (const e of page.items) {
      const li = el("li");
      const link = el("button", e.url, { class: "link endpoint-link" });
      link.addEventListener("click", () => loadMessages(e.endpoint_id));
      li.appendChild(link);
      li.appendChild(el("span", (e.enabled ? " enabled" : " disabled") + ", " + e.dead_messages + " dead"));
      list.appendChild(li);
    }
    if (!page.items.length) list.appendChild(el("li", "No endpoints."));
  } catch (e) {
    document.getElementById("webhooks-note").textContent = "The endpoints could not be read: " + e.message;
  }
}

async function loadMessages(endpoint) {
  const rows = document.getElementById("messages");
  rows.replaceChildren();
  const page = await (await api("/api/queries/v1/webhooks/endpoints/" + endpoint + "/messages?limit=50")).json();
  for (const m of page.items) {
    const again = el("button", "Redeliver", { class: "redeliver", "data-message": m.message_id });
    again.addEventListener("click", () => redeliver(endpoint, m.message_id));
    rows.appendChild(row([m.message_id, m.status, m.event_type, m.attempts, again]));
  }
}

async function redeliver(endpoint, message) {
  const note = document.getElementById("webhooks-note");
  try {
    await api("/api/commands/v1/webhooks/endpoints/" + endpoint + "/redeliver", {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": "console-" + crypto.randomUUID() },
      body: JSON.stringify({ message_id: message }),
    });
    note.textContent = "Redelivery of " + message + " requested.";
  } catch (e) {
    note.textContent = "Redelivery refused: " + e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-in").addEventListener("click", signIn);
  document.getElementById("sign-out").addEventListener("click", signOut);
  for (const b of document.querySelectorAll("nav button[data-tab]")) b.addEventListener("click", () => show(b.dataset.tab));
  document.getElementById("events-filter").addEventListener("submit", (e) => { e.preventDefault(); loadEvents(null); });
  document.getElementById("events-next").addEventListener("click", () => loadEvents(state.after));
  document.getElementById("search-form").addEventListener("submit", search);
  document.getElementById("relay-redrive").addEventListener("click", redriveRelay);
  if (state.token) { document.getElementById("token").value = state.token; signIn(); }
});
