// The console's pages: plain DOM, no framework, nothing but this origin. Every value an
// API returns is put on the page as text (never as HTML): event payloads are anyone's.
"use strict";

const state = {
  token: sessionStorage.getItem("threadline-token") || "",
  after: null,
  // The open conversation's stream, and the reply arriving on it.
  live: null,
  reply: { to: null, attempt: -1, pieces: 0 },
};

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
  if (tab === "conversations") loadConversations();
  if (tab === "knowledge") loadKnowledge(null);
  if (tab === "analytics") loadAnalytics();
  if (tab !== "conversations" && state.live) { state.live.abort(); state.live = null; }
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

// The relay and every projector, each with what needs attention (the rules
// `threadline status` applies too: the console's /api/status answers its report).
async function loadStatus() {
  const rows = document.getElementById("status-rows");
  const note = document.getElementById("status-note");
  try {
    const report = await (await api("/api/status")).json();
    rows.replaceChildren();
    const attention = (part) => {
      const cell = el("span", part.ok ? "ok" : part.attention.join("; "), { class: part.ok ? "ok" : "attention" });
      return cell;
    };
    const r = report.relay.status;
    if (r) {
      const relayState = r.stuck ? "stuck" : r.active ? "active" : "standby";
      rows.appendChild(row(["relay", relayState, r.lag_events + " events", r.parked, "", "", attention(report.relay), ""]));
    } else {
      rows.appendChild(row(["relay", "unreachable", "", "", "", "", attention(report.relay), ""]));
    }
    for (const p of report.projectors) {
      const s = p.status;
      if (!s) { rows.appendChild(row([p.name, "unreachable", "", "", "", "", attention(p), ""])); continue; }
      const waiting = s.waiting_on ? "waiting" : "consuming";
      const parked = s.parked_now === undefined || s.parked_now === null ? s.parked : s.parked_now;
      const redrive = el("button", "Re-drive parked", { class: "redrive-projection", "data-projection": s.projection });
      redrive.disabled = !parked;
      redrive.addEventListener("click", () => redriveProjection(s.projection));
      rows.appendChild(row([p.name, waiting, s.lag_events + " events", parked, s.load.records_in_flight, s.generation, attention(p), redrive]));
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

// A projection's parked events applied again by its running projector (which takes the
// request within a second or so); the status is read again to show them go.
async function redriveProjection(projection) {
  const note = document.getElementById("status-note");
  try {
    await api("/api/commands/v1/admin/projections/" + encodeURIComponent(projection) + "/redrive", { method: "POST" });
    note.textContent = "Re-drive of " + projection + " requested.";
  } catch (e) {
    note.textContent = "Re-drive refused: " + e.message;
    return;
  }
  for (const wait of [1000, 2000, 4000]) {
    await new Promise((done) => setTimeout(done, wait));
    await loadStatus();
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

async function loadConversations() {
  const rows = document.getElementById("conversation-rows");
  try {
    const page = await (await api("/api/queries/v1/conversations?limit=100")).json();
    rows.replaceChildren();
    for (const c of page.items) {
      const link = el("button", c.title, { class: "link conversation-link", "data-id": c.conversation_id });
      link.addEventListener("click", () => openConversation(c));
      rows.appendChild(row([link, c.status, c.message_count, c.last_activity_at]));
    }
    if (!page.items.length) rows.appendChild(row(["No conversations.", "", "", ""]));
  } catch (e) {
    rows.replaceChildren(row(["The conversations could not be read: " + e.message, "", "", ""]));
  }
}

// One conversation as its live stream tells it: every message, and the assistant's reply
// piece by piece while the model writes it (`reply.delta`), until its message arrives.
function openConversation(c) {
  if (state.live) state.live.abort();
  state.live = new AbortController();
  document.getElementById("conversation").hidden = false;
  document.getElementById("conversation-title").textContent = c.title;
  document.getElementById("conversation-messages").replaceChildren();
  document.getElementById("conversation").dataset.events = "0";
  const reply = document.getElementById("live-reply");
  reply.hidden = true;
  reply.textContent = "";
  state.reply = { to: null, attempt: -1, pieces: 0 };
  follow(c.conversation_id, state.live.signal, null);
}

// Reads the stream; when the API ends it (its time limit) it is opened again after the
// last event seen, as an EventSource would.
async function follow(id, signal, lastId) {
  const note = document.getElementById("conversation-state");
  note.textContent = "Live.";
  while (!signal.aborted) {
    const headers = { accept: "text/event-stream" };
    if (lastId) headers["last-event-id"] = lastId;
    let ended = false;
    try {
      const response = await api("/api/queries/v1/conversations/" + id + "/stream", { headers, signal });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffered = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered = (buffered + decoder.decode(value, { stream: true })).replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buffered.indexOf("\n\n")) >= 0) {
          const event = parseSse(buffered.slice(0, cut));
          buffered = buffered.slice(cut + 2);
          if (event.id) lastId = event.id;
          const box = document.getElementById("conversation");
          box.dataset.events = String(Number(box.dataset.events || 0) + 1);
          if (event.type === "end") continue;
          if (event.type === "ConversationEnded") ended = true;
          if (event.data !== null) shown(event);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      note.textContent = "The stream was cut (" + e.message + "); opening it again.";
      await new Promise((done) => setTimeout(done, 1000));
    }
    if (ended) { note.textContent = "The conversation has ended."; return; }
  }
}

function parseSse(block) {
  const event = { type: "message", id: null, data: null };
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.type = value;
    else if (field === "id") event.id = value;
    else if (field === "data") data.push(value);
  }
  if (data.length) {
    try { event.data = JSON.parse(data.join("\n")); } catch (_) { event.data = null; }
  }
  return event;
}

function shown(event) {
  const reply = document.getElementById("live-reply");
  if (event.type === "reply.delta") {
    const d = event.data;
    if (d.reply_to !== state.reply.to || d.attempt !== state.reply.attempt) {
      state.reply = { to: d.reply_to, attempt: d.attempt, pieces: 0 };
      reply.textContent = "";
    }
    state.reply.pieces += 1;
    reply.textContent += d.text;
    reply.dataset.pieces = String(state.reply.pieces);
    reply.hidden = false;
    return;
  }
  if (event.type !== "MessageSent") return;
  const m = event.data;
  const li = el("li", null, { class: "message", "data-role": m.role });
  li.appendChild(el("span", m.role, { class: "role" }));
  li.appendChild(el("span", m.content, { class: "content" }));
  if (m.role === "assistant" && m.reply_to && m.reply_to === state.reply.to) {
    // The reply's message: the pieces seen live are done with.
    li.dataset.pieces = String(state.reply.pieces);
    reply.hidden = true;
    reply.textContent = "";
    state.reply = { to: null, attempt: -1, pieces: 0 };
  }
  document.getElementById("conversation-messages").appendChild(li);
}

// The media type a file is uploaded as: what the browser says, else its extension's.
function mediaType(file) {
  if (file.type) return file.type;
  const name = file.name.toLowerCase();
  if (name.endsWith(".md")) return "text/markdown";
  if (name.endsWith(".pdf")) return "application/pdf";
  return "text/plain";
}

// The knowledge base; after a change, read as of the change's position (read-your-writes).
async function loadKnowledge(position) {
  const rows = document.getElementById("knowledge-rows");
  const params = new URLSearchParams({ limit: "100" });
  if (position) { params.set("position", position); params.set("wait_ms", "5000"); }
  try {
    const page = await (await api("/api/queries/v1/knowledge?" + params)).json();
    rows.replaceChildren();
    for (const k of page.items) {
      const remove = el("button", "Remove", { class: "remove-knowledge", "data-id": k.knowledge_id });
      remove.addEventListener("click", () => removeKnowledge(k.knowledge_id, k.title));
      rows.appendChild(row([k.title, k.media_type, k.size_bytes, k.characters, k.added_at, remove]));
    }
    if (!page.items.length) rows.appendChild(row(["No documents.", "", "", "", "", ""]));
  } catch (e) {
    document.getElementById("knowledge-note").textContent = "The knowledge base could not be read: " + e.message;
  }
}

async function uploadKnowledge(event) {
  event.preventDefault();
  const note = document.getElementById("knowledge-note");
  const file = document.getElementById("knowledge-file").files[0];
  const title = document.getElementById("knowledge-title").value.trim() || (file && file.name);
  if (!file) { note.textContent = "Choose a file first."; return; }
  try {
    const answer = await (await api("/api/commands/v1/knowledge?" + new URLSearchParams({ title }), {
      method: "POST",
      headers: { "content-type": mediaType(file), "idempotency-key": "console-" + crypto.randomUUID() },
      body: file,
    })).json();
    note.textContent = "Added " + title + ".";
    await loadKnowledge(answer.position);
  } catch (e) {
    note.textContent = "The file was refused: " + e.message;
  }
}

async function removeKnowledge(id, title) {
  const note = document.getElementById("knowledge-note");
  try {
    const answer = await (await api("/api/commands/v1/knowledge/" + id, {
      method: "DELETE",
      headers: { "idempotency-key": "console-" + crypto.randomUUID() },
    })).json();
    note.textContent = "Removed " + title + ".";
    await loadKnowledge(answer.position);
  } catch (e) {
    note.textContent = "Not removed: " + e.message;
  }
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

// One bar chart per metric: its value per day of the last seven.
async function loadAnalytics() {
  const charts = document.getElementById("charts");
  const note = document.getElementById("analytics-note");
  charts.replaceChildren();
  note.textContent = "";
  let report;
  try {
    report = await (await api("/api/queries/v1/analytics/usage?group_by=metric&bucket=day")).json();
  } catch (e) {
    note.textContent = "The analytics could not be read: " + e.message;
    return;
  }
  const days = [];
  // Every day bucket the range touches: from the start of `from`'s day until `to`.
  const first = new Date(report.from.slice(0, 10) + "T00:00:00Z").getTime();
  for (let t = first; t < new Date(report.to).getTime(); t += 86400000) days.push(new Date(t).toISOString().slice(0, 10));
  const metrics = new Map();
  for (const item of report.items) {
    const values = metrics.get(item.metric) || new Map();
    const day = item.bucket.slice(0, 10);
    values.set(day, (values.get(day) || 0) + item.value);
    metrics.set(item.metric, values);
  }
  if (!metrics.size) { note.textContent = "Nothing counted yet."; return; }
  const [width, height, bar] = [60 * days.length, 120, 40];
  for (const [metric, values] of [...metrics].sort()) {
    const figure = el("figure", null, { class: "chart", "data-metric": metric });
    const max = Math.max(...values.values(), 1);
    const chart = svg("svg", { width, height: height + 30, viewBox: "0 0 " + width + " " + (height + 30), role: "img" });
    days.forEach((day, i) => {
      const value = values.get(day) || 0;
      const h = Math.round((value / max) * height);
      if (value) chart.appendChild(svg("rect", { x: i * 60 + 10, y: height - h, width: bar, height: Math.max(h, 1) }, undefined));
      chart.appendChild(svg("text", { x: i * 60 + 10, y: height + 12 }, day.slice(5)));
      if (value) chart.appendChild(svg("text", { x: i * 60 + 10, y: height + 26 }, Number.isInteger(value) ? value : value.toFixed(1)));
    });
    figure.appendChild(el("figcaption", metric));
    figure.appendChild(chart);
    charts.appendChild(figure);
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
  document.getElementById("knowledge-form").addEventListener("submit", uploadKnowledge);
  if (state.token) { document.getElementById("token").value = state.token; signIn(); }
});
