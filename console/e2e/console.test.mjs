// End-to-end tests of the web console in a real browser (Debian's Chromium,
// driven by playwright-core) against a running Cairn at CAIRN_URL. With
// CAIRN_ADMIN_KEY set the server has auth on and the console signs in with
// it. Every page is watched: an uncaught JavaScript error or a request to
// any other origin fails the test. Screenshots of each view go to
// CAIRN_SCREENSHOTS (default ../target/console-screenshots), named after
// CAIRN_STORE. CAIRN_CONSOLE_FROM_DISK=1 serves the console's files from
// this folder instead of the binary's copy, to try an edit without a rebuild.
//
//   CAIRN_URL=http://127.0.0.1:8080 npm test

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const BASE = process.env.CAIRN_URL;
assert.ok(BASE, "CAIRN_URL names the server under test");
const ORIGIN = new URL(BASE).origin;
const ADMIN_KEY = process.env.CAIRN_ADMIN_KEY || null;
const STORE = process.env.CAIRN_STORE || "cairn";
const SHOTS = process.env.CAIRN_SCREENSHOTS || new URL("../../target/console-screenshots", import.meta.url).pathname;
/** Names unique to this run, so runs against one store never collide. */
const RUN = `e2e${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
/** How long the Live view may take to show an event appended elsewhere. */
const LIVE_WITHIN_MS = 2000;

let browser;

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
});

/** Calls the API from outside the browser; answers the parsed body. */
async function api(method, path, body, { key = ADMIN_KEY, expect = [200, 201, 204] } = {}) {
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  const parsed = text ? JSON.parse(text) : null;
  assert.ok(expect.includes(response.status), `${method} ${path}: ${response.status} ${text}`);
  return parsed;
}

/** Appends events to a stream; answers them as read back. */
async function append(stream, events) {
  await api("POST", `/streams/${encodeURIComponent(stream)}`, events);
  const page = await api("GET", `/streams/${encodeURIComponent(stream)}?direction=backward&limit=${events.length}`);
  return page.events.reverse();
}

/** Opens the console at `hash` in a fresh tab, signed in with `key` when
 *  auth is on. `done()` checks that nothing went wrong and closes it. */
async function open(hash, { key = ADMIN_KEY, width = 1280, colorScheme = "light" } = {}) {
  const context = await browser.newContext({ viewport: { width, height: 900 }, colorScheme });
  const page = await context.newPage();
  const errors = [];
  const foreign = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => {
    // Chromium logs every error answer as "Failed to load resource"; the
    // console shows those itself. Anything else at error level is a bug.
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) errors.push(message.text());
  });
  page.on("request", (request) => {
    const target = new URL(request.url());
    if (target.origin !== ORIGIN && target.protocol !== "data:") foreign.push(request.url());
  });
  if (process.env.CAIRN_CONSOLE_FROM_DISK) {
    await page.route(`${ORIGIN}/console/**`, (route) => {
      const file = new URL(route.request().url()).pathname.replace(/^\/console\/?/, "") || "index.html";
      const type = file.endsWith(".css") ? "text/css" : file.endsWith(".svg") ? "image/svg+xml" : "text/javascript";
      route.fulfill({ body: readFileSync(new URL(`../${file}`, import.meta.url)), contentType: type });
    });
  }
  await page.goto(`${BASE}/console#${hash}`);
  if (key) await signIn(page, key);
  return {
    page,
    done: async () => {
      assert.deepEqual(errors, [], "no JavaScript error");
      assert.deepEqual(foreign, [], "no request to another origin");
      await context.close();
    },
  };
}

async function signIn(page, key) {
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("button", { name: "Sign out" }).waitFor();
}

const shot = (page, name) => page.screenshot({ path: `${SHOTS}/${STORE}-${name}.png`, fullPage: true });

test("Streams: a stream appended by the test is listed by its prefix and shows its events, snapshot and paging", async () => {
  const stream = `${RUN}order-1`;
  await append(stream, [
    { type: "OrderPlaced", data: { sku: "tea", quantity: 2 }, metadata: { by: "e2e" } },
    { type: "OrderPaid", data: { amount: 7.5 } },
    ...Array.from({ length: 23 }, (_, i) => ({ type: "ItemScanned", data: { n: i } })),
    { type: "OrderShipped", data: { carrier: "post" } },
  ]);
  await api("POST", `/snapshots/${stream}`, { version: 1, state: { paid: true }, type: "Order" });
  const { page, done } = await open("/streams");
  await page.getByLabel("Stream prefix").fill(RUN);
  await page.getByRole("button", { name: "Show" }).click();
  await page.getByRole("link", { name: stream }).waitFor();
  await shot(page, "streams");
  await page.getByRole("link", { name: stream }).click();
  await page.getByRole("heading", { name: `Stream ${stream}` }).waitFor();
  // The newest page first: the last event, not the first.
  await page.getByText("OrderShipped").waitFor();
  assert.equal(await page.getByText("OrderPlaced").count(), 0);
  await page.getByText("Positions 6 to 25 of 0 to 25.").waitFor();
  await page.getByRole("button", { name: "Oldest" }).click();
  await page.getByText("OrderPlaced").click();
  await page.getByText('"quantity": 2').waitFor();
  await page.getByText('"by": "e2e"').waitFor();
  await page.getByRole("button", { name: "Newer" }).click();
  await page.getByText("Positions 20 to 25 of 0 to 25.").waitFor();
  await page.getByText("State", { exact: true }).click();
  await page.getByText('"paid": true').waitFor();
  await shot(page, "stream");
  await done();
});

test("Streams: an unknown stream shows the server's problem detail", async () => {
  const stream = `${RUN}missing-1`;
  const detail = await fetch(`${BASE}/streams/${stream}`, {
    headers: ADMIN_KEY ? { Authorization: `Bearer ${ADMIN_KEY}` } : {},
  }).then((r) => r.json()).then((p) => p.detail);
  assert.ok(detail);
  const { page, done } = await open(`/stream/${stream}`);
  await page.getByRole("alert").getByText(detail).waitFor();
  await done();
});

test("Categories and All: events in global order, filtered by type and correlation", async () => {
  const category = `${RUN}cart`;
  await append(`${category}-1`, [
    { type: "CartOpened", data: {}, correlation_id: `${RUN}-c1` },
    { type: "ItemAdded", data: { sku: "a" }, correlation_id: `${RUN}-c1` },
  ]);
  await append(`${category}-2`, [{ type: "ItemAdded", data: { sku: "b" } }]);
  await api("PUT", `/categories/${category}/retention`, { max_age_s: 3600 });
  const { page, done } = await open("/categories");
  await page.getByLabel("Category").fill(category);
  await page.getByLabel("Types (comma-separated)").fill("ItemAdded");
  await page.getByRole("button", { name: "Show" }).click();
  await page.getByRole("heading", { name: `Category ${category}` }).waitFor();
  await page.getByText("events older than 3600 s are erased").waitFor();
  const items = page.getByRole("list", { name: `Category ${category}` }).getByRole("listitem");
  await items.nth(1).waitFor();
  assert.equal(await items.count(), 2);
  assert.equal(await page.getByText("CartOpened").count(), 0);
  await shot(page, "category");
  await page.getByRole("link", { name: "All", exact: true }).click();
  await page.getByRole("heading", { name: "All events" }).waitFor();
  await page.getByLabel("Correlation").fill(`${RUN}-c1`);
  await page.getByRole("button", { name: "Filter" }).click();
  await page.getByText("CartOpened").waitFor();
  assert.equal(await page.getByRole("list", { name: "All events" }).getByRole("listitem").count(), 2);
  await shot(page, "all");
  await done();
});

test("Live: an event appended from outside the browser shows within 2 s; pause and resume lose nothing; the list stays bounded", async () => {
  const { page, done } = await open("/live");
  await page.getByText("Following: waiting for events.").waitFor();
  const type = `${RUN}Arrived`;
  const started = Date.now();
  await append(`${RUN}live-1`, [{ type, data: { hello: "world" } }]);
  await page.getByText(type).waitFor({ timeout: LIVE_WITHIN_MS });
  const took = Date.now() - started;
  assert.ok(took <= LIVE_WITHIN_MS, `shown after ${took} ms`);
  await shot(page, "live");

  await page.getByRole("button", { name: "Pause" }).click();
  const later = `${RUN}WhilePaused`;
  await append(`${RUN}live-1`, [{ type: later, data: {} }]);
  assert.equal(await page.getByText(later).count(), 0, "a paused view shows nothing new");
  await page.getByRole("button", { name: "Resume" }).click();
  await page.getByText(later).waitFor({ timeout: LIVE_WITHIN_MS });

  await append(`${RUN}live-2`, Array.from({ length: 250 }, (_, n) => ({ type: `${RUN}Burst`, data: { n } })));
  await page.getByText(/252 events arrived/).waitFor();
  assert.equal(await page.getByRole("list", { name: "Live events" }).getByRole("listitem").count(), 200);
  await done();
});

test("Live: a type filter and a tag query follow only what they name", async () => {
  const tag = `${RUN}:t1`;
  const { page, done } = await open(`/live?source=tags&tags=${encodeURIComponent(tag)}&type=Tagged`);
  await page.getByText("Following: waiting for events.").waitFor();
  await append(`${RUN}tagged-1`, [
    { type: "Tagged", data: {}, tags: ["other"] },
    { type: "Untagged", data: {}, tags: [tag] },
    { type: "Tagged", data: { right: true }, tags: [tag] },
  ]);
  await page.getByText(/1 event arrived/).waitFor({ timeout: LIVE_WITHIN_MS });
  assert.equal(await page.getByText("Untagged").count(), 0);
  await done();
});

test("Event and Trace: a three-event chain is drawn whole, each node a link", async () => {
  const stream = `${RUN}chain-1`;
  const [root] = await append(stream, [{ type: `${RUN}Ordered`, data: {}, correlation_id: `${RUN}-flow` }]);
  const [middle] = await append(stream, [{ type: `${RUN}Charged`, data: {}, causation_id: root.id, correlation_id: `${RUN}-flow` }]);
  const [leaf] = await append(stream, [{ type: `${RUN}Shipped`, data: {}, causation_id: middle.id, correlation_id: `${RUN}-flow` }]);
  const { page, done } = await open(`/trace/${middle.id}`);
  const tree = page.getByRole("list", { name: "Causes and effects" });
  for (const event of [root, middle, leaf]) await tree.getByRole("link", { name: event.type }).waitFor();
  await shot(page, "trace");
  await tree.getByRole("link", { name: leaf.type }).click();
  await page.getByRole("heading", { name: new RegExp(leaf.type) }).waitFor();
  await page.getByRole("link", { name: middle.id }).waitFor();
  await shot(page, "event");
  await page.getByRole("link", { name: `${RUN}-flow` }).click();
  await page.getByRole("heading", { name: `Correlation ${RUN}-flow` }).waitFor();
  assert.equal(await page.getByRole("list", { name: `Correlation ${RUN}-flow` }).getByRole("listitem").count(), 3);
  await done();
});

test("Subscriptions: figures, a parked event with its reason, and Replay", async () => {
  const stream = `${RUN}pay-1`;
  await append(stream, [{ type: "PaymentTaken", data: { amount: 3 } }]);
  const name = `${RUN}-billing`;
  await api("PUT", `/subscriptions/${name}`, { source: { stream } });
  const { deliveries } = await api("POST", `/subscriptions/${name}/claim`, { consumer: "worker-1", max: 1 });
  assert.equal(deliveries.length, 1);
  await api("POST", `/subscriptions/${name}/nack`, { leases: [deliveries[0].lease], action: "park", reason: `card declined ${RUN}` });
  const { page, done } = await open("/subscriptions");
  await page.getByRole("link", { name }).click();
  await page.getByText(`card declined ${RUN}`).waitFor();
  await shot(page, "subscription");
  await page.getByRole("button", { name: "Replay", exact: true }).click();
  await page.getByText("1 event went back into delivery.").waitFor();
  await page.getByText(`card declined ${RUN}`).waitFor({ state: "detached" });
  await page.getByRole("link", { name: "Subscriptions" }).click();
  await page.getByRole("link", { name }).waitFor();
  await shot(page, "subscriptions");
  await done();
});

test("Metrics: charts of appends, latency, feeds and errors fill in", async () => {
  const { page, done } = await open("/metrics");
  await page.getByText("Append rate").waitFor();
  await append(`${RUN}metrics-1`, [{ type: "Counted", data: {} }]);
  await page.getByText(/p99: \d/).waitFor({ timeout: 10000 });
  await shot(page, "metrics");
  await done();
});

test("Keys and Schemas: an admin sees the keys in force and the registered schemas", async () => {
  const type = `${RUN}Registered`;
  await api("PUT", `/schemas/${type}`, { type: "object", required: ["email"] });
  const { page, done } = await open("/schemas", { key: ADMIN_KEY });
  await page.getByRole("cell", { name: type }).waitFor();
  const row = page.getByRole("row").filter({ hasText: type });
  await row.getByText("Show").click();
  await row.getByText('"email"').waitFor();
  await shot(page, "schemas");
  // Storing a key turns auth on for the whole server, so only a run with
  // auth already on may make one.
  if (ADMIN_KEY) {
    const { key } = await api("POST", "/keys", { name: `${RUN}-ops`, scopes: ["read", "write"] });
    assert.ok(key.startsWith("cairn_"));
    await page.getByRole("link", { name: "Keys" }).click();
    await page.getByRole("cell", { name: `${RUN}-ops` }).waitFor();
    assert.equal(await page.getByText(key).count(), 0, "no secret is shown");
    await shot(page, "keys");
  }
  await done();
});

test("Layout: readable at 360 px and in dark mode, and usable from the keyboard", async () => {
  const stream = `${RUN}narrow-1`;
  await append(stream, [{ type: "Narrowed", data: { a: "long ".repeat(40) } }]);
  const narrow = await open(`/stream/${stream}`, { width: 360, colorScheme: "dark" });
  await narrow.page.getByText("Narrowed").waitFor();
  const overflow = await narrow.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than the screen`);
  await shot(narrow.page, "stream-360-dark");
  // The Live link, reached with Tab alone, opens its view with Enter.
  for (let i = 0; i < 30; i++) {
    await narrow.page.keyboard.press("Tab");
    if (await narrow.page.evaluate(() => document.activeElement?.textContent === "Live")) break;
  }
  await narrow.page.keyboard.press("Enter");
  await narrow.page.getByRole("heading", { name: "Live" }).waitFor();
  await narrow.done();

  const wide = await open(`/stream/${stream}`, { width: 1920 });
  await wide.page.getByText("Narrowed").waitFor();
  await shot(wide.page, "stream-1920");
  await wide.done();
});

test("Auth: a wrong key is refused with the server's detail, a right one works, and a reader sees only what it reaches", { skip: !ADMIN_KEY && "auth is off" }, async () => {
  const refusal = await fetch(`${BASE}/streams`, { headers: { Authorization: "Bearer cairn_wrong" } }).then((r) => r.json());
  const { page, done } = await open("/streams", { key: null });
  await page.getByLabel("API key").fill("cairn_wrong");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("alert").getByText(refusal.detail).waitFor();
  await shot(page, "sign-in-refused");
  await signIn(page, ADMIN_KEY);
  await page.getByRole("link", { name: "Keys" }).click();
  await page.getByRole("heading", { name: "Keys" }).waitFor();
  await done();

  const reachable = `${RUN}mine-1`;
  await append(reachable, [{ type: "Mine", data: {} }]);
  await append(`${RUN}theirs-1`, [{ type: "Theirs", data: {} }]);
  const { key } = await api("POST", "/keys", { name: `${RUN}-reader`, scopes: ["read"], streams: [`${RUN}mine`] });
  const reader = await open("/streams", { key });
  assert.equal(await reader.page.getByRole("link", { name: "Keys" }).count(), 0);
  await reader.page.getByLabel("Stream prefix").fill(RUN);
  await reader.page.getByRole("button", { name: "Show" }).click();
  await reader.page.getByRole("link", { name: reachable }).waitFor();
  assert.equal(await reader.page.getByRole("link", { name: `${RUN}theirs-1` }).count(), 0);
  await reader.page.getByRole("link", { name: "Metrics" }).click();
  await reader.page.getByRole("alert").getByText(/admin/).waitFor();
  await reader.done();
});
