// Managed subscriptions: each one's position, lag, leases and parked
// events, refreshed every few seconds; parked events with their reason and a
// "Replay" button that puts them back into delivery.

import { get, post, seg, url } from "../api.js";
import { eventHash, h, link, pager, pretty, problemBox, table, time } from "../ui.js";

/** How often the figures refresh. */
const REFRESH_MS = 2000;

/** Calls `draw` now and REFRESH_MS after each answer until the view is
 *  left (a slow server never gets overlapping refreshes); a failed refresh
 *  shows its problem and the next one tries again. */
async function refreshing(signal, draw) {
  const holder = h("div", {});
  let timer;
  const tick = async () => {
    try {
      holder.replaceChildren(await draw());
    } catch (error) {
      if (error.name !== "AbortError") holder.replaceChildren(problemBox(error));
    }
    if (!signal.aborted) timer = setTimeout(tick, REFRESH_MS);
  };
  await tick();
  signal.addEventListener("abort", () => clearTimeout(timer));
  return holder;
}

/** A subscription's source in words. */
function source(s) {
  if (s.all) return "all";
  if (s.category) return `category ${s.category}`;
  if (s.stream) return `stream ${s.stream}`;
  return `query ${JSON.stringify(s.query)}`;
}

/** Every subscription with its figures. */
export async function list(_args, _query, signal) {
  const body = await refreshing(signal, async () => {
    const { subscriptions } = await get("/subscriptions", { signal });
    return table("Subscriptions", [
      ["Subscription", (s) => link(`#/subscription/${seg(s.name)}`, s.name)],
      ["Source", (s) => source(s.source)],
      ["Position", (s) => s.position, "num"],
      ["Lag", (s) => s.lag, "num"],
      ["In flight", (s) => s.in_flight, "num"],
      ["Parked", (s) => s.parked, "num"],
      ["Push", (s) => (s.push ? s.push.url : "—")],
    ], subscriptions);
  });
  return h("section", {}, h("h1", {}, "Subscriptions"),
    h("p", { className: "status" }, `Refreshed every ${REFRESH_MS / 1000} s.`), body);
}

/** One subscription: its state, consumers and parked events. */
export async function one([name], query, signal) {
  const position = query.get("position") || "";
  const notice = h("div", { role: "status" });
  const replay = async (positions) => {
    try {
      const { replayed } = await post(`/subscriptions/${seg(name)}/replay`, positions ? { positions } : {});
      notice.replaceChildren(h("p", {}, `${replayed} event${replayed === 1 ? "" : "s"} went back into delivery.`));
      parked.dispatchEvent(new Event("refresh"));
    } catch (error) {
      notice.replaceChildren(problemBox(error));
    }
  };
  const state = await refreshing(signal, async () => {
    const s = await get(`/subscriptions/${seg(name)}`, { signal });
    return h("div", {},
      h("dl", { className: "facts" },
        h("dt", {}, "Source"), h("dd", {}, source(s.source)),
        h("dt", {}, "Types"), h("dd", {}, s.types.length ? s.types.join(", ") : "any"),
        h("dt", {}, "Position"), h("dd", {}, s.position),
        h("dt", {}, "Head"), h("dd", {}, s.head),
        h("dt", {}, "Lag"), h("dd", {}, s.lag),
        h("dt", {}, "In flight"), h("dd", {}, s.in_flight),
        h("dt", {}, "Parked"), h("dd", {}, s.parked)),
      h("h2", {}, "Consumers"),
      table("Consumers", [
        ["Consumer", (c) => c.consumer], ["In flight", (c) => c.in_flight, "num"],
        ["Last claim", (c) => time(c.last_claim)],
      ], s.consumers),
      h("details", {}, h("summary", {}, "Definition"), pretty(s)));
  });
  const parked = h("div", {});
  const drawParked = async () => {
    try {
      const page = await get(url(`/subscriptions/${seg(name)}/parked`, { position, limit: 100 }), { signal });
      parked.replaceChildren(
        table("Parked events", [
          ["Event", (p) => link(eventHash(p.event.id), `${p.event.type} #${p.event.global_position}`)],
          ["Stream", (p) => p.event.stream],
          ["Reason", (p) => p.reason],
          ["Attempts", (p) => p.attempts, "num"],
          ["Parked", (p) => time(p.parked_at)],
          ["", (p) => h("button", { type: "button", onclick: () => replay([p.event.global_position]) }, "Replay")],
        ], page.parked),
        pager([
          ["Replay all", page.parked.length ? () => replay(null) : null],
          ["Next page", page.end ? null : () => { location.hash = url(`#/subscription/${seg(name)}`, { position: page.next_position }); }],
        ]));
    } catch (error) {
      if (error.name !== "AbortError") parked.replaceChildren(problemBox(error));
    }
  };
  parked.addEventListener("refresh", drawParked);
  await drawParked();
  return h("section", {}, h("h1", {}, "Subscription ", h("code", {}, name)), state,
    h("h2", {}, "Parked events"), notice, parked);
}
