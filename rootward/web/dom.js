// Building the page's DOM from untrusted data. Every string from the API (entity names, log template ids,
// anything telemetry carries) becomes a text node: this module never parses HTML, so a name such as
// `<img src=x onerror=...>` shows as those characters and runs nothing.

const SVG = "http://www.w3.org/2000/svg";

function fill(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.setAttribute("class", value);
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("td", {class: "x"}, "text", otherNode). Strings are text, never markup. */
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

/** An SVG element, likewise. */
export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG, tag), attrs, children);
}

/** A time in unix seconds as UTC, e.g. 2024-05-01 12:00:00Z. */
export function when(t) {
  if (t === null || t === undefined) return "–";
  return new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

/** A number short enough for a label. */
export function num(x) {
  if (typeof x !== "number" || !Number.isFinite(x)) return String(x);
  if (Number.isInteger(x)) return String(x);
  return Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toPrecision(2);
}

/** `n` characters of `text` at most, with an ellipsis when cut. */
export function clip(text, n) {
  const str = String(text);
  return str.length > n ? str.slice(0, n - 1) + "…" : str;
}

/** Append children (strings as text, arrays flattened) to an existing element. */
export function put(el, ...children) {
  return fill(el, null, children);
}
