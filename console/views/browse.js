// Browsing what the store holds: streams, categories, the global log,
// correlations, one event, and a trace of causes and effects.

import { Problem, get, seg, session, url } from "../api.js";
import {
  correlationHash, eventHash, eventList, filterForm, h, link, pager, pretty, problemBox,
  streamHash, table, time, words,
} from "../ui.js";

/** Events per page in every list. */
const PAGE = 20;

/** Sets the hash without adding to the history when only filters change. */
const go = (hash) => { location.hash = hash; };

/** Streams whose name starts with a prefix, paged by name. */
export async function streams(_args, query, signal) {
  const prefix = query.get("prefix") || "";
  const after = query.get("after") || "";
  const page = await get(url("/streams", { prefix, after, limit: 50 }), { signal });
  const list = table("Streams", [
    ["Stream", (s) => link(streamHash(s.stream), s.stream)],
    ["Version", (s) => s.version, "num"],
    ["Last write", (s) => time(s.last_time)],
  ], page.streams);
  return h("section", {},
    h("h1", {}, "Streams"),
    filterForm([["prefix", "Stream prefix", prefix, { type: "search", autocomplete: "off" }]],
      (v) => go(url("#/streams", { prefix: v.prefix }))),
    list,
    pager([
      ["First page", after ? () => go(url("#/streams", { prefix })) : null],
      ["Next page", page.next ? () => go(url("#/streams", { prefix, after: page.next })) : null],
    ]));
}

/** One stream: its version, a page of events (newest first by default,
 *  paged older and newer), its latest snapshot, and its retention policy. */
export async function stream([name], query, signal) {
  if (!name) return streams([], query, signal);
  const direction = query.get("direction") === "forward" ? "forward" : "backward";
  const position = query.get("position") || "";
  const page = await get(url(`/streams/${seg(name)}`, { position, direction, limit: PAGE }), { signal });
  const events = [...page.events].sort((a, b) => a.position - b.position);
  const first = events.length ? events[0].position : null;
  const last = events.length ? events[events.length - 1].position : null;
  const here = (q) => go(streamHash(name, url("", q)));
  const [snapshot, retention] = await Promise.all([
    optional(get(`/snapshots/${seg(name)}`, { signal })),
    session.admin ? optional(get(`/streams/${seg(name)}/retention`, { signal })) : null,
  ]);
  return h("section", {},
    h("h1", {}, "Stream ", h("code", {}, name)),
    h("dl", { className: "facts" },
      h("dt", {}, "Version"), h("dd", {}, page.version),
      h("dt", {}, "Category"), h("dd", {}, link(`#/category/${seg(categoryOf(name))}`, categoryOf(name))),
      session.admin ? [h("dt", {}, "Retention"), h("dd", {}, policy(retention))] : null),
    h("h2", {}, "Events"),
    h("p", { className: "status" }, events.length
      ? `Positions ${first} to ${last} of 0 to ${page.version}.` : "No events on this page."),
    pager([
      ["Oldest", first !== 0 ? () => here({ direction: "forward", position: 0 }) : null],
      ["Older", first > 0 ? () => here({ position: first - 1 }) : null],
      ["Newer", last !== null && last < page.version ? () => here({ direction: "forward", position: last + 1 }) : null],
      ["Newest", last !== page.version ? () => here({}) : null],
    ]),
    eventList(`Events of ${name}`, events),
    h("h2", {}, "Snapshot"),
    snapshotView(name, snapshot));
}

/** The latest snapshot, with a way to the ones before it. */
function snapshotView(name, snapshot) {
  if (!snapshot) return h("p", { className: "muted" }, "No snapshot.");
  const older = h("div", {});
  const show = async (before) => {
    try {
      const s = await get(url(`/snapshots/${seg(name)}`, { until_version: before }));
      older.append(h("h3", {}, `Version ${s.version}`), snapshotFacts(s),
        s.version > 0 ? h("button", { type: "button", onclick: (e) => { e.target.remove(); show(s.version - 1); } }, "Older snapshot") : null);
    } catch (error) {
      older.append(error.status === 404 ? h("p", { className: "muted" }, "No older snapshot.") : problemBox(error));
    }
  };
  return h("div", {}, snapshotFacts(snapshot),
    snapshot.version > 0 ? h("button", { type: "button", onclick: (e) => { e.target.remove(); show(snapshot.version - 1); } }, "Older snapshot") : null,
    older);
}

function snapshotFacts(s) {
  return h("div", {},
    h("dl", { className: "facts" },
      h("dt", {}, "Version"), h("dd", {}, s.version),
      h("dt", {}, "Type"), h("dd", {}, s.type ?? "—"),
      h("dt", {}, "Time"), h("dd", {}, time(s.time))),
    h("details", {}, h("summary", {}, "State"), pretty(s.state)));
}

/** A retention policy in words. */
function policy(p) {
  if (!p) return "none";
  const parts = [];
  if (p.max_age_s != null) parts.push(`events older than ${p.max_age_s} s are erased`);
  if (p.max_count != null) parts.push(`only the newest ${p.max_count} are kept`);
  return parts.join("; ");
}

/** A request's answer, or null when it is 404. */
async function optional(promise) {
  try {
    return await promise;
  } catch (error) {
    if (error instanceof Problem && error.status === 404) return null;
    throw error;
  }
}

/** A stream's category (API.md: the part before the first `-`). */
const categoryOf = (stream) => stream.split("-")[0];

/** Where the reader came from in each paged global list, for "Previous page". */
const backStack = new Map();

/** A page of events in global order with type and correlation filters,
 *  paged forward (and back along the pages the reader came through). */
async function globalList({ title, base, hash, query, signal, extra = null, filters = true }) {
  const position = query.get("position") || "";
  const type = query.get("type") || "";
  const correlation = query.get("correlation_id") || "";
  const params = filters ? { type: words(type), correlation_id: correlation } : {};
  const page = await fill(base, params, position, signal);
  const key = `${hash}|${type}|${correlation}`;
  const stack = backStack.get(key) || [];
  const at = (p) => url(hash, { type, correlation_id: correlation, position: p });
  return h("section", {},
    h("h1", {}, title),
    extra,
    filters ? filterForm([
      ["type", "Types (comma-separated)", type, { autocomplete: "off" }],
      ["correlation_id", "Correlation", correlation, { autocomplete: "off" }],
    ], (v) => go(url(hash, v)), "Filter") : null,
    eventList(title, page.events, { global: true }),
    h("p", { className: "status" }, page.end ? "This is the end of the log for now." : ""),
    pager([
      ["First page", position ? () => { backStack.delete(key); go(at("")); } : null],
      ["Previous page", stack.length ? () => go(at(stack.pop())) : null],
      ["Next page", !page.end
        ? () => { stack.push(position); backStack.set(key, stack); go(at(page.next_position)); } : null],
    ]));
}

/** Most reads one filtered page may take: past them, "Next page" goes on. */
const MAX_READS = 20;

/** A page of up to PAGE events from `position`. A filtered read may answer
 *  short pages, even empty ones, before its end (API.md): read on until the
 *  page is full, the end is reached, or MAX_READS reads were made. */
async function fill(base, params, position, signal) {
  const events = [];
  let next = position;
  for (let reads = 0; reads < MAX_READS; reads++) {
    const page = await get(url(base, { ...params, position: next, limit: PAGE - events.length }), { signal });
    events.push(...page.events);
    next = page.next_position;
    if (page.end || events.length >= PAGE) return { events, next_position: next, end: page.end };
  }
  return { events, next_position: next, end: false };
}

/** Pick a category: a box, with the categories of the first streams offered. */
export async function categories(_args, query, signal) {
  const names = await get(url("/streams", { limit: 1000 }), { signal });
  const known = [...new Set(names.streams.map((s) => categoryOf(s.stream)))];
  const form = filterForm([
    ["category", "Category", query.get("category") || "", { list: "known-categories", autocomplete: "off", required: true }],
    ["type", "Types (comma-separated)", "", { autocomplete: "off" }],
    ["correlation_id", "Correlation", "", { autocomplete: "off" }],
  ], (v) => go(url(`#/category/${seg(v.category)}`, { type: v.type, correlation_id: v.correlation_id })));
  return h("section", {},
    h("h1", {}, "Categories"), form,
    h("datalist", { id: "known-categories" }, known.map((c) => h("option", { value: c }))),
    table("Categories", [["Category", (c) => link(`#/category/${seg(c)}`, c)]], known));
}

/** One category's events in global order, with its retention policy for
 *  an admin. */
export async function category([name], query, signal) {
  const retention = session.admin ? await optional(get(`/categories/${seg(name)}/retention`, { signal })) : null;
  const extra = session.admin
    ? h("dl", { className: "facts" }, h("dt", {}, "Retention"), h("dd", {}, policy(retention)))
    : null;
  return globalList({ title: `Category ${name}`, base: `/categories/${seg(name)}`, hash: `#/category/${seg(name)}`, query, signal, extra });
}

/** Every event in global order. */
export function all(_args, query, signal) {
  return globalList({ title: "All events", base: "/all", hash: "#/all", query, signal });
}

/** Every event of a correlation id. */
export function correlation([id], query, signal) {
  return globalList({ title: `Correlation ${id}`, base: `/correlations/${seg(id)}`, hash: correlationHash(id), query, signal, filters: false });
}

/** A box asking for an event id, for the Event and Trace views. */
function askId(title, view) {
  return h("section", {}, h("h1", {}, title),
    filterForm([["id", "Event id", "", { required: true, autocomplete: "off", pattern: "[0-9a-fA-F-]{36}", title: "a UUID" }]],
      (v) => go(`#/${view}/${seg(v.id)}`), "Open"));
}

/** One event in full, with links to its stream, causes and correlation. */
export async function event([id], _query, signal) {
  if (!id) return askId("Event", "event");
  const e = await get(`/events/${seg(id)}`, { signal });
  return h("section", {},
    h("h1", {}, e.type, " ", h("span", { className: "muted" }, `#${e.global_position}`)),
    h("dl", { className: "facts" },
      h("dt", {}, "Id"), h("dd", {}, h("code", {}, e.id)),
      h("dt", {}, "Stream"), h("dd", {}, link(streamHash(e.stream, url("", { direction: "forward", position: e.position })), e.stream)),
      h("dt", {}, "Position"), h("dd", {}, e.position),
      h("dt", {}, "Global position"), h("dd", {}, e.global_position),
      h("dt", {}, "Time"), h("dd", {}, time(e.time)),
      h("dt", {}, "Caused by"), h("dd", {}, e.causation_id ? link(eventHash(e.causation_id), e.causation_id) : "—"),
      h("dt", {}, "Correlation"), h("dd", {}, e.correlation_id ? link(correlationHash(e.correlation_id), e.correlation_id) : "—"),
      h("dt", {}, "Tags"), h("dd", {}, e.tags.length ? e.tags.join(", ") : "—")),
    h("p", {}, link(`#/trace/${seg(e.id)}`, "Trace causes and effects")),
    h("h2", {}, "Data"), pretty(e.data),
    h("h2", {}, "Metadata"), pretty(e.metadata));
}

/** The tree of an event's causes (root first) and effects, each node a link. */
export async function trace([id], _query, signal) {
  if (!id) return askId("Trace", "trace");
  const t = await get(`/trace/${seg(id)}`, { signal });
  const node = (e, current = false) => h("span", { className: "node", "aria-current": current ? "true" : null },
    link(eventHash(e.id), e.type), " ", h("span", { className: "muted" }, `${e.stream}@${e.position}`));
  const effects = (nodes) => nodes.length ? h("ul", {}, nodes.map((n) => h("li", {}, node(n), effects(n.effects)))) : null;
  // The causes form a chain down to the message, whose effects branch below it.
  let tree = h("li", {}, node(t.message, true), effects(t.effects));
  for (const cause of [...t.causes].reverse()) tree = h("li", {}, node(cause), h("ul", {}, tree));
  return h("section", {},
    h("h1", {}, "Trace of ", h("code", {}, t.message.type)),
    t.truncated ? h("p", { className: "problem", role: "status" }, "The trace was cut short: it reached the server's depth or size cap, or a cycle.") : null,
    h("ul", { className: "tree", "aria-label": "Causes and effects" }, tree));
}
