// Live: follows /all, a category or a tag query over server-sent events and
// shows events as they arrive, newest first, in a list that never holds more
// than MAX_SHOWN of them. Pausing closes the feed; resuming opens it again
// right after the last event shown, so nothing is lost in between.

import { feedUrl, get, seg, url } from "../api.js";
import { eventItem, h, problemBox, words } from "../ui.js";

/** The most events the list keeps: a tab left open stays small. */
const MAX_SHOWN = 200;

/** The live view; its query names the source (`source=all|category|tags`,
 *  `category`, `tags`) and the type filter (`type`). */
export async function view(_args, query, signal) {
  const choice = {
    source: query.get("source") || "all",
    category: query.get("category") || "",
    tags: query.get("tags") || "",
    type: query.get("type") || "",
  };
  const list = h("ul", { className: "events", "aria-label": "Live events" });
  const status = h("p", { className: "status", role: "status", "aria-live": "polite" }, "Connecting…");
  const problem = h("div", {});
  const pause = h("button", { type: "button" }, "Pause");
  let feed = null;
  let resumeAt = "end";
  let shown = 0;

  const target = () => {
    const type = words(choice.type);
    if (choice.source === "category") return [`/categories/${seg(choice.category)}`, { type }];
    if (choice.source === "tags") return ["/events", { tag: words(choice.tags), type }];
    return ["/all", { type }];
  };

  // EventSource cannot show why a server refused or ended a feed: a
  // one-event read of the same source surfaces the problem's detail.
  const readable = async () => {
    const [path, params] = target();
    try {
      await get(url(path, { ...params, limit: 1 }), { signal });
      return true;
    } catch (error) {
      if (error.name !== "AbortError") {
        problem.replaceChildren(problemBox(error));
        status.textContent = "Not following.";
      }
      return false;
    }
  };

  const open = async () => {
    problem.replaceChildren();
    if (!(await readable()) || signal.aborted) return;
    const [path, params] = target();
    feed = new EventSource(feedUrl(path, { ...params, position: resumeAt }));
    feed.onmessage = (message) => {
      const event = JSON.parse(message.data);
      resumeAt = Number(message.lastEventId) + 1;
      list.prepend(eventItem(event, { global: true }));
      shown += 1;
      while (list.children.length > MAX_SHOWN) list.lastElementChild.remove();
      status.textContent = `Following: ${shown} event${shown === 1 ? "" : "s"} arrived (the newest ${MAX_SHOWN} are shown).`;
    };
    feed.addEventListener("caught-up", (message) => {
      resumeAt = JSON.parse(message.data).position;
      if (!shown) status.textContent = "Following: waiting for events.";
    });
    feed.onerror = () => {
      if (feed && feed.readyState === EventSource.CLOSED) {
        status.textContent = "The feed ended.";
        readable();
      } else {
        status.textContent = "Reconnecting…";
      }
    };
  };
  const close = () => {
    if (feed) feed.close();
    feed = null;
  };
  signal.addEventListener("abort", close);

  pause.onclick = () => {
    if (feed) {
      close();
      pause.textContent = "Resume";
      status.textContent = `Paused after ${shown} event${shown === 1 ? "" : "s"}.`;
    } else {
      pause.textContent = "Pause";
      open();
    }
  };

  const fields = {
    source: h("select", { name: "source" },
      [["all", "All"], ["category", "Category"], ["tags", "Tags"]].map(([value, text]) =>
        h("option", { value, selected: value === choice.source }, text))),
    category: h("input", { name: "category", value: choice.category, autocomplete: "off" }),
    tags: h("input", { name: "tags", value: choice.tags, autocomplete: "off", placeholder: "course:c1, student:s7" }),
    type: h("input", { name: "type", value: choice.type, autocomplete: "off" }),
  };
  const form = h("form", { className: "filters" },
    h("label", {}, "Source", fields.source),
    h("label", {}, "Category", fields.category),
    h("label", {}, "Tags", fields.tags),
    h("label", {}, "Type filter", fields.type),
    h("button", { type: "submit" }, "Follow"),
    pause,
    h("button", { type: "button", onclick: () => { list.replaceChildren(); shown = 0; } }, "Clear"));
  form.onsubmit = (event) => {
    event.preventDefault();
    const next = Object.fromEntries(Object.entries(fields).map(([name, input]) => [name, input.value.trim()]));
    // A new source or filter follows from the end of the log.
    location.hash = url("#/live", next);
  };

  open();
  return h("section", {}, h("h1", {}, "Live"), form, problem, status, list);
}
