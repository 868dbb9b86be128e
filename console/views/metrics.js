// Metrics: charts of the append rate, append latency (p50 and p99), open
// feeds and error answers over the last minutes, from /metrics scraped every
// SCRAPE_MS while the console is open (the history survives switching views).

import { get } from "../api.js";
import { COLOURS, draw, format } from "../chart.js";
import { h, problemBox } from "../ui.js";

const SCRAPE_MS = 2000;
/** How much history the charts keep: five minutes. */
const WINDOW_MS = 5 * 60 * 1000;
/** The routes that append. */
const APPEND_ROUTES = new Set(["/streams/{stream}", "/events"]);

/** Scrapes kept: [{t, appended, errors4xx, errors5xx, feeds, buckets}]. */
const scrapes = [];
let scraper = null;
let lastProblem = null;
const listeners = new Set();

/** Reads one scrape of the Prometheus text format into the figures charted. */
function parse(text) {
  const sample = { t: Date.now(), appended: 0, errors4xx: 0, errors5xx: 0, feeds: 0, buckets: new Map() };
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-z_:]+)(?:\{(.*)\})? (\S+)/.exec(line);
    if (!match) continue;
    const [, name, labelText = "", raw] = match;
    const value = Number(raw);
    const labels = Object.fromEntries([...labelText.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (name === "cairn_events_appended_total") sample.appended = value;
    else if (name === "cairn_feeds_open") sample.feeds = value;
    else if (name === "cairn_http_request_duration_seconds_count") {
      if (labels.status >= "500") sample.errors5xx += value;
      else if (labels.status >= "400") sample.errors4xx += value;
    } else if (name === "cairn_http_request_duration_seconds_bucket"
      && labels.method === "POST" && APPEND_ROUTES.has(labels.route) && labels.status < "300") {
      const le = labels.le === "+Inf" ? Infinity : Number(labels.le);
      sample.buckets.set(le, (sample.buckets.get(le) || 0) + value);
    }
  }
  return sample;
}

async function scrape() {
  try {
    scrapes.push(parse(await get("/metrics", { accept: "*/*" })));
    lastProblem = null;
  } catch (error) {
    lastProblem = error;
  }
  const oldest = Date.now() - WINDOW_MS - SCRAPE_MS;
  while (scrapes.length && scrapes[0].t < oldest) scrapes.shift();
  listeners.forEach((listener) => listener());
}

/** The `q` quantile (seconds) of the appends between two scrapes, from
 *  their cumulative buckets; NaN when none happened. */
function quantile(before, after, q) {
  const bounds = [...after.buckets.keys()].sort((a, b) => a - b);
  const count = (s, le) => s.buckets.get(le) || 0;
  const total = count(after, Infinity) - count(before, Infinity);
  if (total <= 0) return NaN;
  let below = 0;
  let lower = 0;
  for (const le of bounds) {
    const within = count(after, le) - count(before, le);
    if (within >= q * total) {
      if (!Number.isFinite(le)) return lower;
      const share = (q * total - below) / Math.max(1, within - below);
      return lower + (le - lower) * share;
    }
    below = within;
    lower = le;
  }
  return lower;
}

/** Per-second rates and figures between consecutive scrapes. */
function figures() {
  const rows = [];
  for (let i = 1; i < scrapes.length; i++) {
    const [a, b] = [scrapes[i - 1], scrapes[i]];
    const seconds = (b.t - a.t) / 1000;
    rows.push({
      t: b.t,
      rate: (b.appended - a.appended) / seconds,
      p50: quantile(a, b, 0.5) * 1000,
      p99: quantile(a, b, 0.99) * 1000,
      feeds: b.feeds,
      e4: (b.errors4xx - a.errors4xx) / seconds,
      e5: (b.errors5xx - a.errors5xx) / seconds,
    });
  }
  return rows;
}

/** A chart with its caption, legend and latest values. */
function chart(title, unit, names) {
  const picture = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  picture.setAttribute("role", "img");
  picture.setAttribute("aria-label", title);
  const latest = h("div", { className: "legend" });
  const figure = h("figure", {}, h("figcaption", {}, title), picture, latest);
  figure.update = (rows, from, to) => {
    const series = names.map(([name, key]) => [name, rows.map((r) => [r.t, r[key]])]);
    draw(picture, series, from, to, unit);
    latest.replaceChildren(...series.map(([name, points], i) => {
      const last = points.length ? points[points.length - 1][1] : NaN;
      const swatch = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      swatch.setAttribute("class", "swatch");
      swatch.setAttribute("viewBox", "0 0 10 10");
      const square = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      for (const [k, v] of Object.entries({ width: 10, height: 10, fill: COLOURS[i] })) square.setAttribute(k, v);
      swatch.append(square);
      return h("span", {}, swatch, `${name}: ${Number.isFinite(last) ? format(last) + unit : "—"}`);
    }));
  };
  return figure;
}

/** The metrics view. */
export async function view(_args, _query, signal) {
  if (!scraper) {
    await scrape();
    scraper = setInterval(scrape, SCRAPE_MS);
  }
  if (lastProblem && !scrapes.length) {
    // Nothing to chart (a key without `admin`, say): say why, and stop asking.
    clearInterval(scraper);
    scraper = null;
    throw lastProblem;
  }
  const charts = [
    chart("Append rate", " ev/s", [["events/s", "rate"]]),
    chart("Append latency", " ms", [["p50", "p50"], ["p99", "p99"]]),
    chart("Open feeds", "", [["feeds", "feeds"]]),
    chart("Error answers", "/s", [["4xx", "e4"], ["5xx", "e5"]]),
  ];
  const problem = h("div", {});
  const update = () => {
    const to = Date.now();
    const rows = figures();
    charts.forEach((c) => c.update(rows, to - WINDOW_MS, to));
    problem.replaceChildren(lastProblem ? problemBox(lastProblem) : "");
  };
  update();
  listeners.add(update);
  signal.addEventListener("abort", () => listeners.delete(update));
  return h("section", {}, h("h1", {}, "Metrics"),
    h("p", { className: "status" }, `The last ${WINDOW_MS / 60000} minutes, scraped from /metrics every ${SCRAPE_MS / 1000} s while the console is open.`),
    problem, h("div", { className: "charts" }, charts));
}
