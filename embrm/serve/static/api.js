// Every request of the page: same origin, JSON, with the bearer token the user entered once.
// The token lives in this tab's sessionStorage only (gone when the tab closes), is sent only
// in the Authorization header, and is forgotten the moment the service refuses it.

const KEY = "embrm-token";
const refusedHandlers = [];

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Whether the service wants a token (the one fact the static shell carries). */
export const authRequired = document.documentElement.dataset.auth === "on";

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

/** Call fn when the service answers 401 (a wrong or revoked token). */
export function onRefused(fn) {
  refusedHandlers.push(fn);
}

export async function api(path, {method = "GET", body} = {}) {
  const headers = {Accept: "application/json"};
  const t = token.get();
  if (authRequired && !t) throw new ApiError(401, "a token is needed");
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store", credentials: "omit", redirect: "error"});
  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  if (res.status === 401) {
    token.clear();
    refusedHandlers.forEach((fn) => fn());
    throw new ApiError(401, "the service refused the token");
  }
  if (!res.ok) throw new ApiError(res.status, (data && data.error && data.error.message) || `HTTP ${res.status}`);
  return data;
}

/** A query string from an object, skipping empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}
