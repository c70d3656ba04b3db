// The incidents views: the list (status filter, severity, opened, candidates) and one incident (its anomalies,
// observed against expected, each with its series' recent values; the calls around its services; the changes and
// rollouts linked to it; the diagnosis with ranked hypotheses and their evidence; the proposed action and where it
// stands).

import { h, s, put, when, num, clip } from "./dom.js";
import { api, token, link, incidentPath, rerender, ApiError } from "./app.js";

const state = { status: "open", notice: null };

export async function incidentsView(el) {
  const data = await api("incidents", { params: { status: state.status === "all" ? "" : state.status, limit: 200 } });
  const select = h("select", { id: "status-filter", "aria-label": "status", onchange: (e) => { state.status = e.target.value; rerender(); } },
    ["open", "resolved", "all"].map((v) => h("option", { value: v }, v)));
  select.value = state.status;
  el.append(h("div", { class: "toolbar" }, h("h1", {}, "Incidents"), h("label", {}, "status ", select),
    h("span", { class: "muted" }, state.status === "all" ? `${data.total} in all` : `${data.total} ${state.status}`)));
  if (!data.incidents.length) {
    el.append(h("p", { class: "empty" }, state.status === "all" ? "No incidents yet." : `No ${state.status} incidents.`));
    return;
  }
  el.append(h("table", { class: "list incidents" },
    h("thead", {}, h("tr", {}, ["incident", "status", "severity", "opened", "likely root cause, most likely first", "diagnosis"].map((t) => h("th", {}, t)))),
    h("tbody", {}, data.incidents.map((i) => h("tr", { class: "sev-" + severity(i.severity) },
      h("td", {}, link(incidentPath(i.id), i.id)),
      h("td", {}, i.status + (i.acknowledged ? " (acknowledged)" : "")),
      h("td", {}, h("span", { class: "sev" }, i.severity)),
      h("td", {}, when(i.opened)),
      h("td", {}, i.candidates.slice(0, 3).map((c, n) => [n ? ", " : "", c])),
      h("td", {}, i.diagnosis ? clip(i.diagnosis.summary || "", 80) : "–"))))));
}

function severity(value) {
  return ["critical", "warning", "info"].includes(value) ? value : "other";
}

export async function incidentView(el, id) {
  let incident;
  try {
    incident = await api("incidents/" + encodeURIComponent(id));
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      el.append(h("p", { class: "empty" }, `No incident ${id}: it may have been pruned, or the link is wrong. `, link("incidents", "All incidents")));
      return;
    }
    throw e;
  }
  put(el,
    h("p", {}, link("incidents", "← incidents")),
    h("h1", {}, incident.id, " ", h("span", { class: "sev sev-" + severity(incident.severity) }, incident.severity), " ", h("span", { class: "muted" }, incident.status)),
    h("p", { class: "muted" }, `opened ${when(incident.opened)}, updated ${when(incident.updated)}`,
      incident.resolved ? `, resolved ${when(incident.resolved)}` : "",
      incident.acknowledged ? ", acknowledged" : "",
      incident.silenced_until ? `, silenced until ${when(incident.silenced_until)}` : ""),
    respond(incident),
    h("h2", {}, "Likely root cause, most likely first"),
    h("ol", { class: "candidates" }, incident.candidates.map((c) => h("li", {}, c))),
    anomalies(incident.anomalies, incident.series || []),
    around(incident),
    changes(incident.changes),
    diagnosis(incident.diagnosis),
    action(incident.action));
}

function anomalies(list, series) {
  if (!list.length) return h("p", { class: "muted" }, "No anomalies left.");
  const recent = new Map(series.map((x) => [x.entity + "\u0000" + x.signal, x.values]));
  return [h("h2", {}, "Anomalies"), h("table", { class: "list anomalies" },
    h("thead", {}, h("tr", {}, ["entity", "signal", "observed", "expected", "score", "recent values", "window", "seen by"].map((t) => h("th", {}, t)))),
    h("tbody", {}, list.map((a) => h("tr", {},
      h("td", {}, a.entity), h("td", {}, a.signal), h("td", { class: "num" }, num(a.value)), h("td", { class: "num" }, num(a.expected)),
      h("td", { class: "num" }, num(a.score)), h("td", {}, sparkline(recent.get(a.entity + "\u0000" + a.signal))),
      h("td", {}, `${when(a.start)} – ${when(a.end)}`), h("td", { class: "muted" }, a.source || "here")))))];
}

/** A series' recent values as a line, oldest left; its last point (the anomalous end) marked. */
function sparkline(values) {
  const finite = (values || []).filter((v) => typeof v === "number" && Number.isFinite(v));
  if (finite.length < 2) return h("span", { class: "muted" }, "–");
  const w = 120, ht = 24, lo = Math.min(...finite), hi = Math.max(...finite), span = hi - lo || 1;
  const xy = finite.map((v, n) => [(n * w) / (finite.length - 1), ht - 2 - ((v - lo) * (ht - 4)) / span]);
  const [lx, ly] = xy[xy.length - 1];
  return s("svg", { class: "spark", width: w, height: ht, viewBox: `0 0 ${w} ${ht}`, role: "img",
    "aria-label": `last ${finite.length} values, ${num(lo)} to ${num(hi)}, now ${num(finite[finite.length - 1])}` },
    s("polyline", { points: xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ") }),
    s("circle", { cx: lx.toFixed(1), cy: ly.toFixed(1), r: 2.5 }));
}

/** The calls among the incident's services and one hop around them (the API's subgraph), the incident's first. */
function around(incident) {
  const graph = incident.subgraph;
  if (!graph) return null;
  const own = new Set(incident.entities.map((e) => e.id));
  const calls = graph.edges.filter((e) => e.kind === "calls")
    .sort((a, b) => (own.has(b.source) && own.has(b.target)) - (own.has(a.source) && own.has(a.target)));
  const name = (id) => own.has(id) ? h("strong", {}, id) : id;
  return [h("h2", {}, "Calls around it"),
    calls.length ? h("ul", { class: "calls" }, calls.slice(0, 30).map((e) => h("li", {}, name(e.source), " → ", name(e.target),
      e.requests !== undefined ? h("span", { class: "muted" }, ` ${e.requests} requests, ${e.errors || 0} errors`) : null)))
      : h("p", { class: "muted" }, "No calls to or from its services in the graph."),
    calls.length > 30 ? h("p", { class: "muted" }, `and ${calls.length - 30} more`) : null,
    graph.truncated ? h("p", { class: "muted" }, "(the neighbourhood was cut at 200 entities)") : null];
}

function changes(list) {
  if (!list.length) return [h("h2", {}, "Changes before it"), h("p", { class: "muted" }, "No rollouts or API writes on its entities shortly before.")];
  return [h("h2", {}, "Changes before it"), h("ul", { class: "changes" }, list.map((c) =>
    h("li", {}, when(c.time), " ", h("strong", {}, c.kind), " ", c.entity, c.detail ? ` (${c.detail})` : "", c.who ? ` by ${c.who}` : "")))];
}

function diagnosis(d) {
  if (!d) return [h("h2", {}, "Diagnosis"), h("p", { class: "muted" }, "Not diagnosed (yet): the agent diagnoses open incidents when agent.enabled is true.")];
  return [h("h2", {}, "Diagnosis"),
    h("p", {}, d.summary || "", " ", h("span", { class: "muted" }, `(${d.reasoner}, ${when(d.at)})`)),
    h("ol", { class: "hypotheses" }, (d.hypotheses || []).map((hyp) => h("li", {},
      h("div", { class: "hypothesis" }, h("strong", {}, hyp.entity), " ", hyp.fault_class, " ", confidence(hyp.confidence)),
      hyp.evidence && hyp.evidence.length ? h("ul", { class: "evidence" }, hyp.evidence.map((e) =>
        h("li", {}, `${e.entity} ${e.signal}: ${num(e.value)} (expected ${num(e.expected)})`))) : null,
      hyp.falsified_by && hyp.falsified_by.length ? h("details", {}, h("summary", {}, "what would prove it wrong"),
        h("ul", {}, hyp.falsified_by.map((f) => h("li", {}, f)))) : null)))];
}

export function confidence(c) {
  const pct = Math.round((Number(c) || 0) * 100);
  const meter = h("meter", { min: 0, max: 100, value: pct });
  return h("span", { class: "confidence" }, meter, ` ${pct}%`);
}

function action(a) {
  if (!a) return [h("h2", {}, "Proposed action"), h("p", { class: "muted" }, "None proposed.")];
  const r = a.request || {};
  const decision = a.decision || {};
  const reasons = [...(decision.deny || []), ...(decision.approval || []), ...(decision.notes || [])];
  return [h("h2", {}, "Proposed action"),
    h("p", {}, h("strong", {}, `${r.kind} ${r.namespace || ""}/${r.name || ""}`), " ", h("span", { class: "status-pill" }, a.status)),
    a.because ? h("p", {}, "for ", a.because, " ", a.confidence !== undefined ? confidence(a.confidence) : null) : null,
    a.detail ? h("p", { class: "muted" }, a.detail) : null,
    h("p", {}, `policy: ${decision.result || "–"}`),
    reasons.length ? h("ul", {}, reasons.map((x) => h("li", {}, x))) : null,
    a.approval_id ? h("p", {}, "Approval ", a.approval_id, ": ", link("approvals", "decide on the approvals page")) : null,
    a.collected ? h("details", { class: "collected" }, h("summary", {}, "what was collected (pod, events, log tails)"),
      h("pre", {}, JSON.stringify(a.collected, null, 2))) : null];
}

/** Acknowledge, silence for an hour, resolve: writes, which need an operator token (the approvals page keeps it)
 * unless the page is opened from the Rootward host itself and no tokens are configured. */
function respond(incident) {
  const buttons = [];
  if (!incident.acknowledged) buttons.push(h("button", { id: "acknowledge", onclick: () => write(incident, "acknowledge") }, "Acknowledge"));
  buttons.push(h("button", { id: "silence", onclick: () => write(incident, "silence", { for_s: 3600 }) }, "Silence 1 h"));
  if (incident.status === "open") buttons.push(h("button", { id: "resolve", onclick: () => write(incident, "resolve") }, "Resolve"));
  const notice = state.notice && state.notice.id === incident.id
    ? h("p", { class: state.notice.bad ? "error notice" : "ok notice", role: "alert" }, state.notice.text) : null;
  return [h("p", { class: "respond" }, buttons.map((b, n) => [n ? " " : "", b]),
    token.get() ? null : [" ", h("span", { class: "muted" }, "(with an operator token pasted on the approvals page)")]), notice];
}

async function write(incident, verb, params = {}) {
  try {
    await api(`incidents/${encodeURIComponent(incident.id)}/${verb}`, { method: "POST", params });
    state.notice = { id: incident.id, text: `${verb === "silence" ? "Silenced for an hour" : verb === "resolve" ? "Resolved" : "Acknowledged"}.`, bad: false };
  } catch (e) {
    const text = e instanceof ApiError && e.status === 401
      ? `401: this needs an operator's token (policies.approvals.tokens)${token.get() ? ", not the one pasted (a reader's reads only)" : ""}: paste one on the approvals page.`
      : e instanceof ApiError ? `${e.status}: ${e.message}` : `The API is unreachable: ${e.message}`;
    state.notice = { id: incident.id, text, bad: true };
  }
  rerender();
}
