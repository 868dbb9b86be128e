// The console's one way to the server: same-origin requests with the tab's
// API key as a bearer header, and every error answer turned into a Problem
// carrying the server's own `detail`.

const KEY = "cairn.console.key";

/** The API key kept for this tab only (sessionStorage), or null. */
export function apiKey() {
  return sessionStorage.getItem(KEY);
}

/** Keeps (or, given null, forgets) the tab's API key. */
export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
}

/** What the console learnt of the caller: whether auth is on, and whether
 *  its credential may see the admin views. */
export const session = { admin: false, authOn: false };

/** An error answer of the server (RFC 9457), or a request that never got one. */
export class Problem extends Error {
  constructor(status, title, detail) {
    super(detail || title);
    this.status = status;
    this.title = title;
    this.detail = detail;
  }
}

/** A path with its query: `query` values that are arrays repeat the name;
 *  empty values are left out. */
export function url(path, query = {}) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    for (const one of [].concat(value)) {
      if (one !== undefined && one !== null && one !== "") params.append(name, String(one));
    }
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

/** A path segment, percent-encoded (stream names may hold `+`, `:`…). */
export const seg = encodeURIComponent;

/** Sends a request and answers its JSON body (or its text, for non-JSON
 *  answers such as /metrics); throws a Problem for any error answer. */
export async function request(method, target, { body, signal, accept = "application/json" } = {}) {
  const headers = { Accept: accept };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(target, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new Problem(0, "The server did not answer", String(error.message || error));
  }
  const type = response.headers.get("content-type") || "";
  if (!response.ok) {
    let problem = {};
    if (type.includes("json")) problem = await response.json().catch(() => ({}));
    throw new Problem(response.status, problem.title || response.statusText || "Error",
      problem.detail || `The server answered ${response.status}.`);
  }
  if (response.status === 204) return null;
  return type.includes("json") ? response.json() : response.text();
}

export const get = (target, options) => request("GET", target, options);
export const post = (target, body, options) => request("POST", target, { ...options, body });

/** The URL of a feed for EventSource, which cannot send headers: the key
 *  travels as `access_token`, as API.md allows for feeds only. */
export function feedUrl(path, query = {}) {
  const key = apiKey();
  return url(path, key ? { ...query, access_token: key } : query);
}
