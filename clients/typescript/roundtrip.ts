// A round trip through the TypeScript client generated from Cairn's OpenAPI
// document (openapi-typescript for the types, openapi-fetch for the calls),
// typechecked by tsc: append with If-Match (and a 412 checked), read a
// stream, a category, /all, one event by id, a snapshot and a trace.
// CI runs, with CAIRN_URL (and CAIRN_KEY when auth is on) set:
//   npm ci && npm run generate && npm run check && npm run roundtrip
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type EventWrite = components["schemas"]["EventWrite"];

function check(condition: boolean, what: string): asserts condition {
  if (!condition) {
    console.error(`roundtrip.ts: ${what}`);
    process.exit(1);
  }
}

const baseUrl = process.env.CAIRN_URL;
check(baseUrl !== undefined, "CAIRN_URL is not set");
// JSON answers only: the reads that also serve feeds answer `text/event-stream` too.
const client = createClient<paths, "application/json">({
  baseUrl,
  headers: { Authorization: `Bearer ${process.env.CAIRN_KEY ?? "none"}` },
});
const run = Math.random().toString(16).slice(2, 10);
const stream = `tsorder${run}-1`;
const opened: EventWrite = { type: "Opened", data: { total: 0 }, metadata: { source: "roundtrip.ts" } };

const first = await client.POST("/streams/{stream}", {
  params: { path: { stream }, header: { "If-Match": '"-1"' } },
  body: opened,
});
check(first.response.status === 201 && first.data !== undefined, `first append: ${first.response.status}`);
check(first.data.version === 0, `version ${first.data.version}`);
const openedId = first.data.events[0]?.id;
check(openedId !== undefined, "the append names its event");

const batch: EventWrite[] = [
  { type: "Added", data: { item: "tea" }, causation_id: openedId },
  { type: "Added", data: { item: "cake" } },
];
const second = await client.POST("/streams/{stream}", {
  params: { path: { stream }, header: { "If-Match": '"0"' } },
  body: batch,
});
check(second.data?.version === 2, `batch append: ${second.response.status}`);

const stale = await client.POST("/streams/{stream}", {
  params: { path: { stream }, header: { "If-Match": '"0"' } },
  body: opened,
});
check(stale.response.status === 412 && stale.error !== undefined, `stale append: ${stale.response.status}`);
const problem: Record<string, unknown> = { ...stale.error };
check(problem["actual_version"] === 2, `412 body ${JSON.stringify(stale.error)}`);

const page = await client.GET("/streams/{stream}", { params: { path: { stream } } });
check(page.data !== undefined, `read: ${page.response.status}`);
check(page.data.events.map((e) => e.type).join() === "Opened,Added,Added", "the stream's events");

const category = await client.GET("/categories/{category}", {
  params: { path: { category: `tsorder${run}` } },
});
check(category.data?.events.length === 3, `category: ${category.response.status}`);
const from = category.data.events[0]?.global_position;
check(from !== undefined, "a global position");

const all = await client.GET("/all", { params: { query: { position: String(from), limit: 1 } } });
check(all.data?.events[0]?.id === openedId, `/all: ${all.response.status}`);

const one = await client.GET("/events/{id}", { params: { path: { id: openedId } } });
check(one.data?.stream === stream, `event by id: ${one.response.status}`);

const stored = await client.POST("/snapshots/{stream}", {
  params: { path: { stream } },
  body: { version: 2, state: { items: 2 }, type: "Order" },
});
check(stored.response.status === 201, `snapshot: ${stored.response.status}`);
const snapshot = await client.GET("/snapshots/{stream}", { params: { path: { stream } } });
check(snapshot.data?.version === 2, `snapshot read back: ${snapshot.response.status}`);

const tree = await client.GET("/trace/{message_id}", { params: { path: { message_id: openedId } } });
check(tree.data?.effects.length === 1, `trace: ${tree.response.status}`);

console.log("roundtrip.ts: every call went through the generated client");
