// A line chart in SVG, small enough to write here rather than vendor a
// charting library many times the size of the whole console.

const NS = "http://www.w3.org/2000/svg";
const W = 320, H = 140, PAD = 28;

/** The colours of the series, in order (readable in light and dark). */
export const COLOURS = ["#2f7ed8", "#e0712c", "#3ba55c", "#c0392b"];

function svg(tag, attrs) {
  const element = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, value);
  return element;
}

/** Draws `series` ([[name, [[t, value]…]]…], t in ms) into `target` (an
 *  <svg>), over the window [from, to], with `unit` after the top value. */
export function draw(target, series, from, to, unit) {
  const values = series.flatMap(([, points]) => points.map(([, v]) => v)).filter(Number.isFinite);
  const top = niceTop(Math.max(0, ...values));
  target.setAttribute("viewBox", `0 0 ${W} ${H}`);
  target.replaceChildren(
    svg("line", { x1: PAD, y1: H - PAD / 2, x2: W, y2: H - PAD / 2, stroke: "currentColor", "stroke-opacity": ".3" }),
    svg("line", { x1: PAD, y1: 4, x2: PAD, y2: H - PAD / 2, stroke: "currentColor", "stroke-opacity": ".3" }));
  const label = (y, text) => {
    const t = svg("text", { x: PAD - 4, y, "text-anchor": "end", "font-size": "10", fill: "currentColor" });
    t.textContent = text;
    return t;
  };
  target.append(label(12, `${format(top)}${unit}`), label(H - PAD / 2, "0"));
  const x = (t) => PAD + ((t - from) / Math.max(1, to - from)) * (W - PAD);
  const y = (v) => H - PAD / 2 - (v / top) * (H - PAD / 2 - 6);
  series.forEach(([, points], i) => {
    const drawn = points.filter(([, v]) => Number.isFinite(v));
    if (drawn.length < 2) return;
    const d = drawn.map(([t, v], j) => `${j ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join("");
    target.append(svg("path", { d, fill: "none", stroke: COLOURS[i % COLOURS.length], "stroke-width": "1.5" }));
  });
}

/** A round number at or above `v`, for the top of the axis. */
function niceTop(v) {
  if (v <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * power).find((n) => n >= v);
}

/** A number in a few characters. */
export function format(v) {
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k`;
  return v >= 10 || v === 0 ? String(Math.round(v)) : v.toPrecision(2);
}
