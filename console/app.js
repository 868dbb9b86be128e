// The console's shell: the navigation bar, the API key, and a router from
// the URL's hash (`#/stream/account-1?position=3`) to a view. A view is a
// function (args, query, signal) → element; `signal` aborts when the reader
// leaves it, which stops its timers and feeds.

import { Problem, apiKey, get, session, setApiKey } from "./api.js";
import { h, problemBox } from "./ui.js";
import * as browse from "./views/browse.js";
import * as live from "./views/live.js";
import * as subscriptions from "./views/subscriptions.js";
import * as metrics from "./views/metrics.js";
import * as admin from "./views/admin.js";

/** The views in the navigation bar, in order; `admin`: shown to admins only. */
const NAV = [
  ["Streams", "streams"], ["Categories", "categories"], ["All", "all"], ["Live", "live"],
  ["Event", "event"], ["Trace", "trace"], ["Subscriptions", "subscriptions"],
  ["Metrics", "metrics"], ["Keys", "keys", "admin"], ["Schemas", "schemas", "admin"],
];

/** Every view by the first word of its hash. */
const VIEWS = {
  streams: browse.streams, stream: browse.stream, categories: browse.categories,
  category: browse.category, all: browse.all, correlation: browse.correlation,
  event: browse.event, trace: browse.trace, live: live.view,
  subscriptions: subscriptions.list, subscription: subscriptions.one,
  metrics: metrics.view, keys: admin.keys, schemas: admin.schemas,
};

const main = document.getElementById("main");
let leaving = new AbortController();

/** The current hash as [view, args, query]. */
function route() {
  const [path, search = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, ...args] = path.split("/").map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part; // a malformed escape stays as typed; the server judges it
    }
  });
  return [name || "streams", args, new URLSearchParams(search)];
}

function drawNav(current) {
  const items = NAV.filter(([, , only]) => !only || session.admin).map(([text, name]) =>
    h("li", {}, h("a", { href: `#/${name}`, "aria-current": name === current ? "page" : null }, text)));
  document.getElementById("nav").replaceChildren(...items);
  const who = document.getElementById("who");
  who.replaceChildren();
  if (session.authOn && apiKey()) {
    who.append(h("span", {}, session.admin ? "admin" : "signed in"),
      h("button", { type: "button", onclick: signOut }, "Sign out"));
  }
}

/** Shows the view the hash names. */
async function render() {
  leaving.abort();
  leaving = new AbortController();
  const signal = leaving.signal;
  const [name, args, query] = route();
  const view = VIEWS[name];
  drawNav(name === "stream" ? "streams" : name === "category" ? "categories" : name);
  if (!view) {
    main.replaceChildren(problemBox(new Problem(404, "No such view", `The console has no view “${name}”.`)));
    return;
  }
  try {
    const element = await view(args, query, signal);
    if (signal.aborted) return;
    main.replaceChildren(element);
  } catch (error) {
    if (signal.aborted || error.name === "AbortError") return;
    if (error instanceof Problem && error.status === 401) return showLogin(error);
    main.replaceChildren(problemBox(error));
  }
}

/** The key form: the key is checked against the server before it is kept. */
function showLogin(refusal) {
  leaving.abort();
  drawNav("");
  const input = h("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "off", required: true });
  const form = h("form", { className: "login" },
    h("h1", {}, "Sign in"),
    h("p", {}, "This Cairn asks for a credential. The key is kept for this tab only."),
    h("label", { for: "api-key" }, "API key", input),
    refusal ? problemBox(refusal) : null,
    h("button", { type: "submit" }, "Sign in"));
  form.onsubmit = async (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    const refused = await probe();
    if (refused) {
      setApiKey(null);
      showLogin(refused);
    } else {
      render();
    }
  };
  main.replaceChildren(form);
  input.focus();
}

function signOut() {
  setApiKey(null);
  session.admin = false;
  showLogin();
}

/** Asks the server who the caller is: a Problem if the credential is
 *  refused, else null (and `session` filled in). */
async function probe() {
  try {
    await get("/streams?limit=1");
  } catch (error) {
    if (error instanceof Problem && error.status === 401) {
      session.authOn = true;
      return error;
    }
    if (!(error instanceof Problem && error.status === 403)) return error;
  }
  try {
    await get("/keys");
    session.admin = true;
  } catch {
    session.admin = false;
  }
  session.authOn = Boolean(apiKey());
  return null;
}

window.addEventListener("hashchange", () => {
  render();
  main.focus({ preventScroll: true });
});

const hadKey = Boolean(apiKey());
const refused = await probe();
if (refused && refused.status === 401) {
  setApiKey(null);
  showLogin(hadKey ? refused : null);
} else if (refused) {
  main.replaceChildren(problemBox(refused));
} else {
  render();
}
