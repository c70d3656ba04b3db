// The topology view: the live graph as SVG in layers (callers left, callees right), laid out here, entities
// coloured by kind, call edges labelled with requests and errors, the anomalous entities of open incidents
// outlined; clicking an entity shows /api/v1/entity in the side panel.

import { h, s, put, when, num, clip } from "./dom.js";
import { api, link, incidentPath, problem, rerender, ApiError } from "./app.js";

const COL = 330;
const ROW = 54;
const BOX_W = 180;
const BOX_H = 34;
const PAD = 24;
// What the default view shows: services and the peers they call. "All entities" adds pods, nodes, workloads, ...
const CALLERS = new Set(["service", "database", "queue", "host"]);

const state = { selected: null, everything: false };

export async function graphView(el) {
  const params = state.everything ? {} : { edges: "calls" };
  const [topology, open] = await Promise.all([api("topology", { params }), api("incidents", { params: { status: "open", limit: 100 } })]);
  const flagged = anomalous(open.incidents);
  const entities = state.everything ? topology.entities : topology.entities.filter((e) => CALLERS.has(e.kind) || e.virtual);
  const ids = new Set(entities.map((e) => e.id));
  const edges = topology.edges.filter((e) => ids.has(e.source) && ids.has(e.target) && (state.everything || e.kind === "calls"));
  const toggle = h("input", { type: "checkbox", id: "everything", onchange: (e) => { state.everything = e.target.checked; rerender(); } });
  toggle.checked = state.everything;
  const bar = h("div", { class: "toolbar" },
    h("label", {}, toggle, " all entities (pods, workloads, nodes, namespaces)"),
    h("span", { class: "muted" }, `${entities.length} entities, ${edges.length} edges`),
    legend(entities));
  const panel = h("aside", { class: "panel" });
  const drawing = entities.length
    ? draw(entities, edges, flagged, panel)
    : h("p", { class: "empty" }, "No entities yet: point an OpenTelemetry Collector's OTLP exporter at Rootward's receiver (4317 gRPC, 4318 HTTP).");
  el.append(bar, openIncidents(open.incidents), h("div", { class: "split" }, h("div", { class: "canvas" }, drawing), panel));
  if (state.selected) await details(panel, state.selected, flagged);
  else panel.append(h("p", { class: "muted" }, "Click an entity for its details."));
}

function anomalous(incidents) {
  const flagged = new Map();
  for (const incident of incidents) {
    for (const a of incident.anomalies) if (!flagged.has(a.entity)) flagged.set(a.entity, incident.id);
    if (incident.candidates.length) flagged.set(incident.candidates[0], incident.id);
  }
  return flagged;
}

function openIncidents(incidents) {
  if (!incidents.length) return h("p", { class: "ok" }, "No open incidents.");
  return h("p", { class: "alert" }, "Open incidents: ",
    incidents.map((i, n) => [n ? ", " : "", link(incidentPath(i.id), i.id), ` (${i.severity}, ${clip(i.candidates[0] || "", 48)})`]));
}

function legend(entities) {
  const kinds = [...new Set(entities.map((e) => e.kind))].sort();
  return h("span", { class: "legend" }, kinds.map((k) => h("span", { class: "chip kind-" + safeKind(k) }, k)));
}

// Entity kinds come from telemetry too: only known ones become class names.
function safeKind(kind) {
  return ["service", "pod", "node", "workload", "namespace", "database", "queue", "host"].includes(kind) ? kind : "other";
}

/** Layers by longest path from the sources (back edges of cycles ignored); order within a layer by the mean
 * position of the callers (one sweep), so call chains read left to right with few crossings. */
export function layout(ids, edges) {
  const out = new Map(ids.map((id) => [id, []]));
  for (const e of edges) if (e.source !== e.target) out.get(e.source).push(e.target);
  const mark = new Map();
  const order = [];
  const back = new Set();
  const visit = (id) => {
    mark.set(id, 1);
    for (const next of out.get(id)) {
      if (mark.get(next) === 1) back.add(id + "\u0000" + next);
      else if (!mark.has(next)) visit(next);
    }
    mark.set(id, 2);
    order.push(id);
  };
  for (const id of [...ids].sort()) if (!mark.has(id)) visit(id);
  const layer = new Map(ids.map((id) => [id, 0]));
  for (const id of order.reverse()) {
    for (const next of out.get(id)) {
      if (!back.has(id + "\u0000" + next)) layer.set(next, Math.max(layer.get(next), layer.get(id) + 1));
    }
  }
  const columns = [];
  for (const id of [...ids].sort()) (columns[layer.get(id)] ||= []).push(id);
  const row = new Map();
  const preds = new Map(ids.map((id) => [id, []]));
  for (const e of edges) if (e.source !== e.target) preds.get(e.target).push(e.source);
  for (const column of columns) {
    if (!column) continue;
    const mean = (id) => {
      const known = preds.get(id).filter((p) => row.has(p) && layer.get(p) < layer.get(id));
      return known.length ? known.reduce((a, p) => a + row.get(p), 0) / known.length : Infinity;
    };
    column.sort((a, b) => mean(a) - mean(b) || (a < b ? -1 : 1));
    column.forEach((id, i) => row.set(id, i));
  }
  return new Map(ids.map((id) => [id, { x: PAD + layer.get(id) * COL, y: PAD + row.get(id) * ROW }]));
}

function draw(entities, edges, flagged, panel) {
  const at = layout(entities.map((e) => e.id), edges);
  const width = Math.max(...[...at.values()].map((p) => p.x)) + BOX_W + PAD;
  const height = Math.max(...[...at.values()].map((p) => p.y)) + BOX_H + PAD;
  const svg = s("svg", { class: "graph", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "dependency graph" },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));
  for (const e of edges) svg.append(edge(e, at.get(e.source), at.get(e.target)));
  for (const entity of entities) svg.append(node(entity, at.get(entity.id), flagged, panel));
  return svg;
}

function edge(e, a, b) {
  const x1 = a.x + BOX_W, y1 = a.y + BOX_H / 2, x2 = b.x, y2 = b.y + BOX_H / 2;
  const bend = Math.max(40, Math.abs(x2 - x1) / 2);
  const d = x2 > x1
    ? `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`
    : `M ${x1} ${y1} C ${x1 + 80} ${y1 - 60}, ${x2 - 80} ${y2 - 60}, ${x2} ${y2}`;
  const errors = e.errors || 0;
  const g = s("g", { class: "edge edge-" + (e.kind === "calls" ? "calls" : "other") + (errors ? " failing" : "") },
    s("path", { d, "marker-end": "url(#arrow)" }),
    s("title", {}, `${e.source} → ${e.target} (${e.kind})`));
  if (e.kind === "calls") {
    const span = (e.last_seen || 0) - (e.first_seen || 0);
    const rate = span > 0 ? ` · ${num(e.requests / span)}/s` : "";
    g.append(s("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4, class: "edge-label" },
      `${e.requests ?? 0} req${rate}` + (errors ? ` · ${errors} err` : "")));
  }
  return g;
}

function node(entity, p, flagged, panel) {
  const incident = flagged.get(entity.id);
  const classes = ["entity", "kind-" + safeKind(entity.kind)];
  if (incident) classes.push("anomalous");
  if (state.selected === entity.id) classes.push("selected");
  const label = entity.name || entity.id;
  return s("g", {
    class: classes.join(" "), transform: `translate(${p.x} ${p.y})`, tabindex: 0, role: "button", "data-id": entity.id,
    onclick: () => select(entity.id, panel, flagged),
    onkeydown: (ev) => { if (ev.key === "Enter") select(entity.id, panel, flagged); },
  },
  s("rect", { width: BOX_W, height: BOX_H, rx: 6 }),
  s("text", { x: 10, y: 14, class: "entity-name" }, clip(label, 26)),
  s("text", { x: 10, y: 27, class: "entity-kind" }, clip(entity.kind + (entity.namespace ? " · " + entity.namespace : "") + (incident ? " · anomalous" : ""), 30)),
  s("title", {}, entity.id));
}

async function select(id, panel, flagged) {
  state.selected = id;
  for (const g of document.querySelectorAll("g.entity")) g.classList.toggle("selected", g.dataset.id === id);
  panel.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    await details(panel, id, flagged);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return rerender(); // the token went: the view asks for one
    panel.replaceChildren(problem(e));
  }
}

async function details(panel, id, flagged) {
  let entity;
  try {
    entity = await api("entity", { params: { id } });
  } catch (e) {
    if (e.status === 404) state.selected = null; // aged out of the graph
    throw e;
  }
  const { outgoing = [], incoming = [], ...fields } = entity;
  const rows = Object.entries(fields).map(([k, v]) =>
    h("tr", {}, h("th", {}, k), h("td", {}, k.endsWith("_seen") ? when(v) : typeof v === "object" ? JSON.stringify(v) : String(v))));
  const edgeList = (title, list, end) => [h("h3", {}, `${title} (${list.length})`),
    h("ul", { class: "edges" }, list.map((e) => h("li", {},
      h("button", { class: "linkish", onclick: () => select(e[end], panel, flagged) }, e[end]), " ", h("span", { class: "muted" }, e.kind),
      e.kind === "calls" ? h("span", { class: e.errors ? "bad" : "muted" }, ` ${e.requests} req, ${e.errors} err`) : null)))];
  const incident = flagged.get(id);
  panel.replaceChildren();
  put(panel,
    h("h2", {}, entity.name || id),
    incident ? h("p", { class: "alert" }, "Anomalous in ", link(incidentPath(incident), incident)) : null,
    h("table", { class: "fields" }, rows),
    edgeList("Calls and links out", outgoing, "target"),
    edgeList("In", incoming, "source"));
}
