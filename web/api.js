// The service's HTTP API as the dashboard uses it: JSON requests with the token (kept for the
// tab in sessionStorage), errors as ApiError with the server's message, and Server-Sent
// Events read through fetch (EventSource cannot send an Authorization header).

const TOKEN_KEY = "mdn-token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

let unauthorized = () => {};
export function onUnauthorized(f) {
  unauthorized = f;
}

function headers(extra = {}) {
  const h = { ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function fail(r) {
  if (r.status === 401) unauthorized();
  let e = {};
  try {
    e = (await r.json()).error || {};
  } catch {
    // not JSON: the status line says it
  }
  return new ApiError(r.status, e.code || "error", e.message || `${r.status} ${r.statusText}`);
}

export async function request(method, path, body, contentType) {
  const opts = { method, headers: headers(contentType ? { "Content-Type": contentType } : {}) };
  if (body !== undefined) {
    opts.body = body instanceof Blob || typeof body === "string" ? body : JSON.stringify(body);
    if (!contentType && !(body instanceof Blob)) opts.headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, opts);
  if (!r.ok) throw await fail(r);
  if (r.status === 204) return null;
  const type = r.headers.get("Content-Type") || "";
  return type.includes("json") ? r.json() : r.blob();
}

export const get = (path) => request("GET", path);
export const post = (path, body, contentType) => request("POST", path, body, contentType);
export const del = (path) => request("DELETE", path);

/// A blob: URL of what `path` answers (figures and downloads need the token too).
export async function blobUrl(path) {
  const r = await fetch(path, { headers: headers() });
  if (!r.ok) throw await fail(r);
  return URL.createObjectURL(await r.blob());
}

/// Follows an event stream: `onEvent(data)` for each event, `onEnd(error?)` when it ends.
/// Returns a function that stops following.
export function follow(path, onEvent, onEnd = () => {}) {
  const ctrl = new AbortController();
  (async () => {
    try {
      const r = await fetch(path, {
        headers: headers({ Accept: "text/event-stream" }),
        signal: ctrl.signal,
      });
      if (!r.ok) throw await fail(r);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const data = block
            .split("\n")
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).replace(/^ /, ""))
            .join("\n");
          if (data) onEvent(JSON.parse(data));
        }
      }
      onEnd();
    } catch (e) {
      if (e.name !== "AbortError") onEnd(e);
    }
  })();
  return () => ctrl.abort();
}
