// Building blocks of the views. Everything the server sends is put into the
// page as text (never as HTML), so no event's data can run in the console.

import { Problem, seg } from "./api.js";

/** Names set as attributes: no property of the same name can be set. */
const ATTRIBUTES = new Set(["for", "role", "list"]);

/** An element: `attrs` are properties (`onclick`, `className`…) or, for
 *  names with a dash and `for`, attributes; children are nodes or text. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.includes("-") || ATTRIBUTES.has(name)) element.setAttribute(name, value);
    else element[name] = value;
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** A link to a view of the console. */
export const link = (hash, text) => h("a", { href: hash }, text);

/** The hash of an event's view, of a stream's, of a correlation's. */
export const eventHash = (id) => `#/event/${seg(id)}`;
export const streamHash = (stream, query = "") => `#/stream/${seg(stream)}${query}`;
export const correlationHash = (id) => `#/correlation/${seg(id)}`;

/** An error shown as the server worded it. */
export function problemBox(error) {
  if (!(error instanceof Problem)) error = new Problem(0, "Error", String(error && error.message || error));
  const status = error.status ? ` (${error.status})` : "";
  return h("div", { className: "problem", role: "alert" },
    h("strong", {}, `${error.title}${status}`), h("p", {}, error.detail || ""));
}

/** JSON, indented. */
export const pretty = (value) => h("pre", {}, JSON.stringify(value, null, 2));

/** A time as the reader's locale writes it, with the exact UTC instant as a tooltip. */
export function time(iso) {
  if (!iso) return "";
  return h("time", { className: "time", dateTime: iso, title: iso }, new Date(iso).toLocaleString());
}

/** A table with a caption for screen readers: `columns` are [heading, cell
 *  function, "num"?]. */
export function table(caption, columns, rows) {
  return h("div", { className: "table" }, h("table", {},
    h("caption", { className: "skip" }, caption),
    h("thead", {}, h("tr", {}, columns.map(([name, , kind]) => h("th", { scope: "col", className: kind || "" }, name)))),
    h("tbody", {}, rows.length
      ? rows.map((row) => h("tr", {}, columns.map(([, cell, kind]) => h("td", { className: kind || "" }, cell(row)))))
      : h("tr", {}, h("td", { colSpan: columns.length, className: "muted" }, "Nothing here.")))));
}

/** One event as a row that opens to show its data and metadata.
 *  `global`: number it by global position and name its stream. */
export function eventItem(event, { global = false } = {}) {
  return h("li", {}, h("details", {},
    h("summary", {},
      h("span", { className: "pos" }, global ? event.global_position : event.position),
      h("span", { className: "type" }, event.type),
      global ? h("span", { className: "stream" }, event.stream) : null,
      time(event.time)),
    h("div", { className: "body" },
      h("p", {}, link(eventHash(event.id), "Open event"), " · ",
        link(`#/trace/${seg(event.id)}`, "Trace"),
        global ? [" · ", link(streamHash(event.stream), "Stream")] : null),
      h("div", {}, "data"), pretty(event.data),
      h("div", {}, "metadata"), pretty(event.metadata))));
}

/** A list of events. */
export function eventList(label, events, options) {
  if (!events.length) return h("p", { className: "muted" }, "No events.");
  return h("ul", { className: "events", "aria-label": label }, events.map((e) => eventItem(e, options)));
}

/** A form of labelled fields that calls `submit(values)`; fields are
 *  [name, label, value, extra attributes]. */
export function filterForm(fields, submit, buttonText = "Show") {
  const inputs = {};
  const form = h("form", { className: "filters" },
    fields.map(([name, label, value, extra]) => h("label", {}, label,
      inputs[name] = h("input", { name, value: value || "", ...extra }))),
    h("button", { type: "submit" }, buttonText));
  form.onsubmit = (event) => {
    event.preventDefault();
    const values = {};
    for (const [name, input] of Object.entries(inputs)) values[name] = input.value.trim();
    submit(values);
  };
  return form;
}

/** A row of paging buttons: [text, action or null (disabled)]. */
export function pager(buttons) {
  return h("div", { className: "pager" }, buttons.map(([text, action]) =>
    h("button", { type: "button", disabled: !action, onclick: action || undefined }, text)));
}

/** Comma- or space-separated words as a list. */
export const words = (text) => (text || "").split(/[\s,]+/).filter(Boolean);
