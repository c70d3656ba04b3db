// The page's entry point: which view the address shows, the API client, and the refresh loop.
// Addresses are relative to where the page is served (this file is at <root>/web/app.js), so it works behind a
// proxy's path prefix: <root>/ graph, <root>/incidents, <root>/incidents/<id> (Slack's links), <root>/approvals.

import { h } from "./dom.js";
import { graphView } from "./graph.js";
import { incidentsView, incidentView } from "./incidents.js";
import { approvalsView } from "./approvals.js";

export const ROOT = new URL("../", import.meta.url);
const REFRESH_MS = 5000;
const TOKEN_KEY = "rootward.approvals.token";

/** An API answer that is not 2xx: its status and the API's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The bearer token pasted here (sessionStorage: gone with the tab, never in the address); sent with every API
 * call: an operator's decides and writes, a reader's (api.readers) reads when the API wants a token to read. */
export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || "",
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value.trim()),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** JSON from `api/v1/<path>`; throws ApiError for a non-2xx answer, TypeError when the API is unreachable. */
export async function api(path, { method = "GET", params = {}, body } = {}) {
  const url = new URL("api/v1/" + path, ROOT);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") url.searchParams.set(k, v);
  const headers = { accept: "application/json" };
  if (token.get()) headers.authorization = "Bearer " + token.get();
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(url, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data && typeof data.message === "string" ? data.message : response.statusText;
    throw new ApiError(response.status, message);
  }
  return data;
}

/** A page-local link: `<a href>` that switches views without a reload. */
export function link(path, ...children) {
  return h("a", { href: new URL(path, ROOT).href, onclick: (e) => navigate(e, path) }, ...children);
}

/** The address of an incident's page. */
export function incidentPath(id) {
  return "incidents/" + encodeURIComponent(id);
}

function navigate(event, path) {
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  history.pushState(null, "", new URL(path, ROOT).href);
  show(true);
}

function route() {
  const rest = location.pathname.slice(ROOT.pathname.length);
  const parts = rest.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "incidents" && parts.length > 1) return ["incidents", (el) => incidentView(el, parts[1])];
  if (parts[0] === "incidents") return ["incidents", incidentsView];
  if (parts[0] === "approvals") return ["approvals", approvalsView];
  return ["graph", graphView];
}

const main = () => document.getElementById("view");
const status = (text, bad) => {
  const el = document.getElementById("status");
  el.textContent = text;
  el.className = bad ? "status bad" : "status";
};
let generation = 0;
let timer = null;

/** Render the current view; `fresh` when the address changed (starts from an empty view). */
async function show(fresh) {
  const [name, view] = route();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === name);
  const mine = ++generation;
  const el = h("div", { class: "view-" + name });
  clearTimeout(timer);
  try {
    await view(el, { fresh });
    status("updated " + new Date().toLocaleTimeString(), false);
  } catch (e) {
    el.replaceChildren(...(e instanceof ApiError && e.status === 401 ? locked() : [problem(e)]));
    status(e instanceof ApiError ? `API answered ${e.status}` : "API unreachable", true);
  }
  if (mine !== generation) return; // a newer render started meanwhile: its result wins
  main().replaceChildren(el);
  timer = setTimeout(refresh, REFRESH_MS);
}

/** The API wants a token to read (api.reads: token): the form to paste one, and why. */
function locked() {
  const why = token.get()
    ? "The token pasted in this tab was refused: forget it and paste a valid one."
    : "This Rootward shows its data to token holders only (api.reads: token): paste a reader's (api.readers) or an operator's token.";
  return [h("h1", {}, "Token needed"), h("p", { class: "error", role: "alert", id: "locked" }, why), tokenForm()];
}

/** Paste a token, or forget the one in use; `changed` runs after either (then the view renders again). */
export function tokenForm(changed = () => {}) {
  const input = h("input", { type: "password", id: "token", autocomplete: "off", placeholder: "token", "aria-label": "token" });
  const use = () => { if (input.value.trim()) { token.set(input.value); changed(); input.value = ""; input.blur(); rerender(); } };
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") use(); });
  if (token.get()) {
    return h("p", { class: "token" }, "Using the token pasted in this tab. ",
      h("button", { id: "forget-token", onclick: () => { token.clear(); changed(); rerender(); } }, "Forget token"));
  }
  return h("p", { class: "token" }, input, " ", h("button", { id: "use-token", onclick: use }, "Use token"));
}

/** What went wrong, for the view's place. */
export function problem(e) {
  if (e instanceof ApiError) return h("p", { class: "error" }, `The API answered ${e.status}: ${e.message}`);
  return h("p", { class: "error" }, "Rootward's API is unreachable (", String(e.message || e), "). Retrying every ",
    String(REFRESH_MS / 1000), " s.");
}

function refresh() {
  // Do not replace a form the user is typing into: try again on the next tick.
  const active = document.activeElement;
  if (active && main().contains(active) && ["INPUT", "TEXTAREA"].includes(active.tagName)) {
    timer = setTimeout(refresh, REFRESH_MS);
    return;
  }
  show(false);
}

/** Re-render now (after a decision, a filter change). */
export function rerender() {
  show(false);
}

window.addEventListener("popstate", () => show(true));
show(true);
