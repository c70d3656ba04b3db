// The approvals view: actions that policy held back for a human, each with its diagnosis, blast radius, policy
// reasons and server-side dry run, and Approve / Reject. The API wants a bearer token (policies.approvals.tokens):
// the approver pastes it once; it stays in this tab's sessionStorage and goes only in the Authorization header.

import { h, when, num } from "./dom.js";
import { api, token, tokenForm, link, incidentPath, rerender, ApiError, ROOT } from "./app.js";
import { confidence } from "./incidents.js";

const state = { status: "pending", notice: null };

export async function approvalsView(el) {
  el.append(h("h1", {}, "Approvals"));
  const who = await whoActs();
  if (who && who.acting === false) el.append(notActing(who));
  el.append(tokenForm(() => { state.notice = null; }));
  if (state.notice) el.append(h("p", { class: state.notice.bad ? "error notice" : "ok notice", role: "alert" }, state.notice.text));
  if (!token.get()) {
    el.append(h("p", { class: "empty" }, "Paste an approver's token (policies.approvals.tokens) to see and decide on pending actions."));
    return;
  }
  let data;
  try {
    data = await api("approvals", { params: { status: state.status } });
  } catch (e) {
    el.append(refused(e));
    return;
  }
  const select = h("select", { id: "approval-filter", "aria-label": "status", onchange: (e) => { state.status = e.target.value; rerender(); } },
    ["pending", "approved", "rejected", "expired", "all"].map((v) => h("option", { value: v }, v)));
  select.value = state.status;
  el.append(h("div", { class: "toolbar" }, h("label", {}, "status ", select)));
  if (!data.approvals.length) {
    el.append(h("p", { class: "empty" }, state.status === "pending" ? "Nothing waits for a decision." : `No ${state.status} approvals.`));
    return;
  }
  el.append(...data.approvals.map(card));
}

/** This Rootward's /readyz: whether it acts, and who holds the Lease (null when it cannot be read). */
async function whoActs() {
  try {
    const response = await fetch(new URL("readyz", ROOT), { headers: { accept: "application/json" }, cache: "no-store" });
    return await response.json();
  } catch {
    return null;
  }
}

/** Why no approval may show here: the one that acts keeps them (README, "The DaemonSet"). */
function notActing(who) {
  const holder = who.lease_holder
    ? `${who.lease_holder} holds the Lease, acts, and keeps the approvals: open this page through svc/rootward-leader.`
    : "Approvals are kept by the Rootward that acts (actions are off here, or this is a replica that forwards).";
  return h("p", { class: "note", id: "not-acting", role: "note" }, "This Rootward does not act. ", holder);
}

/** Why the list could not be read: a wrong token (401), approvals off (403), no actions here (404). */
function refused(e) {
  if (e instanceof ApiError && e.status === 401) return h("p", { class: "error", role: "alert" }, "401: the token was refused: only an operator's token (policies.approvals.tokens) sees and decides approvals; a reader's (api.readers) reads the rest of the page. Forget it to paste an operator's.");
  if (e instanceof ApiError && e.status === 403) return h("p", { class: "error" }, "403: approvals over HTTP are off on this Rootward (set policies.approvals.tokens).");
  if (e instanceof ApiError && e.status === 404) return h("p", { class: "empty" }, "This Rootward does not act (actions.enabled is false): nothing to approve.");
  throw e;
}

function card(a) {
  const r = a.request || {};
  const d = a.diagnosis || {};
  const b = a.blast_radius || {};
  const decision = a.decision || {};
  const comment = h("input", { type: "text", class: "comment", placeholder: "comment (optional)", "aria-label": "comment", maxlength: 4000 });
  const buttons = a.status === "pending"
    ? h("p", { class: "decide" }, comment, " ",
      h("button", { class: "approve", onclick: () => decide(a, "approve", comment.value) }, "Approve"), " ",
      h("button", { class: "reject", onclick: () => decide(a, "reject", comment.value) }, "Reject"))
    : h("p", {}, `${a.status}`, a.decided_by ? ` by ${a.decided_by} at ${when(a.decided_at)}` : "", a.comment ? `: ${a.comment}` : "");
  return h("section", { class: "card approval", "data-id": a.id },
    h("h2", {}, `${r.kind} ${a.target || `${r.namespace}/${r.name}`}`, " ", h("span", { class: "status-pill" }, a.status)),
    h("p", { class: "muted" }, `${a.id} · ${a.request_id} · asked ${when(a.created)} · expires ${when(a.expires)}`),
    h("h3", {}, "Diagnosis"),
    h("p", {}, d.summary || "–", " ", d.confidence !== undefined ? confidence(d.confidence) : null,
      d.incident_id ? [" ", link(incidentPath(d.incident_id), d.incident_id)] : null),
    d.evidence && d.evidence.length ? h("ul", { class: "evidence" }, d.evidence.map((e) => h("li", {}, e))) : null,
    h("h3", {}, "Blast radius"),
    h("ul", {},
      h("li", {}, `pods affected: ${num(b.pods_affected ?? 0)} of ${num(b.pods_total ?? 0)}` + (b.pods_at_once ? `, ${b.pods_at_once} at once` : "")),
      b.replicas_before !== undefined ? h("li", {}, `replicas: ${b.replicas_before} → ${b.replicas_after}`) : null,
      h("li", {}, `namespaces: ${(b.namespaces || []).join(", ") || "–"}`),
      h("li", {}, `depend on it: ${(b.dependents || []).join(", ") || "nothing seen"}`),
      b.pdbs && b.pdbs.length ? h("li", {}, "disruption budgets: " + b.pdbs.map((p) => `${p.name} (${p.disruptions_allowed} disruptions allowed)`).join(", ")) : null),
    h("h3", {}, `Policy: ${decision.result || "–"}`),
    h("ul", {}, [...(decision.deny || []), ...(decision.approval || []), ...(decision.notes || [])].map((x) => h("li", {}, x))),
    a.dry_run ? h("details", {}, h("summary", {}, "server-side dry run"), h("pre", {}, JSON.stringify(a.dry_run, null, 2))) : null,
    buttons);
}

async function decide(a, verb, comment) {
  try {
    const answer = await api(`approvals/${encodeURIComponent(a.id)}/${verb}`, { method: "POST", body: { comment } });
    state.notice = verb === "approve"
      ? { text: `Approved by ${answer.decided_by}: running ${answer.request_id}.`, bad: false }
      : { text: `Rejected by ${answer.decided_by}.`, bad: false };
  } catch (e) {
    const text = e instanceof ApiError && e.status === 401
      ? "401: the token was refused. Forget it and paste a valid one."
      : e instanceof ApiError ? `${e.status}: ${e.message}` : `The API is unreachable: ${e.message}`;
    state.notice = { text, bad: true };
  }
  rerender();
}
