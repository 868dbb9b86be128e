// What an admin sees beyond the data: API keys (never their secrets) and
// event schemas. Retention policies show on their stream's view.

import { get } from "../api.js";
import { h, pretty, table, time } from "../ui.js";

/** The keys in force. */
export async function keys(_args, _query, signal) {
  const { keys: list } = await get("/keys", { signal });
  return h("section", {}, h("h1", {}, "Keys"),
    table("API keys", [
      ["Name", (k) => k.name],
      ["Id", (k) => h("code", {}, k.id)],
      ["Scopes", (k) => k.scopes.join(", ")],
      ["Streams", (k) => (k.streams ? k.streams.join(", ") : "all")],
      ["Expires", (k) => (k.expires_at ? time(k.expires_at) : "never")],
      ["Created", (k) => time(k.created)],
    ], list));
}

/** The registered event schemas. */
export async function schemas(_args, _query, signal) {
  const { schemas: list } = await get("/schemas", { signal });
  return h("section", {}, h("h1", {}, "Schemas"),
    table("Event schemas", [
      ["Event type", (s) => s.type],
      ["Version", (s) => s.version, "num"],
      ["Stored", (s) => time(s.time)],
      ["Schema", (s) => h("details", {}, h("summary", {}, "Show"), pretty(s.schema))],
    ], list));
}
