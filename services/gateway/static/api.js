// @ts-check
// The public API as the storefront uses it: JSON in and out, the shared error shape, bearer
// tokens kept in sessionStorage (this tab only), and one refresh on a 401.

const SESSION_KEY = "bazaar.session";

/**
 * @typedef {{ access_token: string, refresh_token: string, email: string }} Session
 */

/** An answer in the shared error shape `{"error": {"code", "message", "fields"}}`. */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status; 0 when the server could not be reached
   * @param {string} code
   * @param {string} message
   * @param {Record<string, string>} [fields]
   */
  constructor(status, code, message, fields) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.fields = fields ?? {};
  }

  /** One line for a person: the message and, for invalid input, what is wrong with each field. */
  describe() {
    const details = Object.entries(this.fields).map(([field, problem]) => `${field} ${problem}`);
    return details.length > 0 ? `${this.message}: ${details.join("; ")}` : this.message;
  }
}

/** @returns {Session | null} */
function loadSession() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null");
    return stored && typeof stored.access_token === "string" ? stored : null;
  } catch {
    return null;
  }
}

/** @type {Session | null} */
let session = loadSession();
/** @type {Set<(session: Session | null, why?: string) => void>} */
const listeners = new Set();

/**
 * @param {Session | null} next
 * @param {string} [why] why the session ended, for the person
 */
function setSession(next, why) {
  session = next;
  try {
    if (next) sessionStorage.setItem(SESSION_KEY, JSON.stringify(next));
    else sessionStorage.removeItem(SESSION_KEY);
  } catch {
    // Storage can be unavailable (private modes); the session then lives in memory only.
  }
  for (const listener of listeners) listener(next, why);
}

export function currentSession() {
  return session;
}

/** @param {(session: Session | null, why?: string) => void} listener */
export function onSessionChange(listener) {
  listeners.add(listener);
}

/**
 * Reads an answer's error, whatever its body.
 * @param {Response} response
 * @returns {Promise<ApiError>}
 */
export async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's page, an empty body).
  }
  const error = body && typeof body === "object" ? body.error : null;
  if (error && typeof error.message === "string") {
    return new ApiError(response.status, String(error.code ?? "error"), error.message, error.fields);
  }
  const fallback =
    response.status >= 500
      ? "the server could not answer; try again in a moment"
      : `the request failed (HTTP ${response.status})`;
  return new ApiError(response.status, `http_${response.status}`, fallback);
}

/**
 * fetch() that turns a network failure into an ApiError with status 0.
 * @param {string} path
 * @param {RequestInit} init
 */
async function send(path, init) {
  try {
    return await fetch(path, init);
  } catch (cause) {
    if (cause instanceof DOMException && cause.name === "AbortError") throw cause;
    throw new ApiError(0, "network_error", "could not reach the server; check the connection");
  }
}

/** @type {Promise<boolean> | null} */
let refreshing = null;

/**
 * Trades the refresh token for a new pair, once however many requests ask at the same time.
 * Ends the session when the refresh token is refused.
 * @param {string} spentAccessToken the token that was refused; if it was already replaced, no
 *   refresh is needed
 */
function refreshSession(spentAccessToken) {
  if (session && session.access_token !== spentAccessToken) return Promise.resolve(true);
  if (!refreshing) {
    refreshing = (async () => {
      const current = session;
      if (!current) return false;
      const response = await send("/api/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: current.refresh_token }),
      });
      if (!response.ok) {
        if (response.status === 401 || response.status === 422) {
          setSession(null, "Your session has ended; please sign in again.");
          return false;
        }
        throw await errorOf(response);
      }
      const pair = await response.json();
      setSession({ ...current, access_token: pair.access_token, refresh_token: pair.refresh_token });
      return true;
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/**
 * A request with the bearer token (when signed in). A 401 refreshes the tokens once and
 * repeats the request; the caller gets the Response, whatever its status.
 * @param {string} path
 * @param {RequestInit} [init]
 * @returns {Promise<Response>}
 */
export async function authorizedFetch(path, init = {}) {
  const attempt = async () => {
    const token = session?.access_token ?? "";
    const headers = new Headers(init.headers);
    if (token) headers.set("Authorization", `Bearer ${token}`);
    return { token, response: await send(path, { ...init, headers }) };
  };
  const first = await attempt();
  if (first.response.status !== 401 || !first.token) return first.response;
  if (!(await refreshSession(first.token))) return first.response;
  return (await attempt()).response;
}

/**
 * A JSON request; resolves to the parsed answer (null for 204), rejects with ApiError.
 * @param {string} path
 * @param {{ method?: string, body?: unknown, headers?: Record<string, string>, signal?: AbortSignal }} [options]
 */
export async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers ?? {}) };
  /** @type {RequestInit} */
  const init = { method: options.method ?? "GET", headers, signal: options.signal };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  const response = await authorizedFetch(path, init);
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/**
 * @param {string} email
 * @param {string} password
 */
export async function login(email, password) {
  const response = await send("/api/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ email, password }),
  });
  if (!response.ok) {
    const error = await errorOf(response);
    const wait = Number(response.headers.get("Retry-After"));
    if (response.status === 429 && wait > 0) {
      error.message = `too many sign-in attempts; try again in ${Math.ceil(wait / 60)} minute(s)`;
    }
    throw error;
  }
  const pair = await response.json();
  setSession({ access_token: pair.access_token, refresh_token: pair.refresh_token, email });
}

/**
 * @param {string} email
 * @param {string} password
 * @param {string} name
 */
export async function register(email, password, name) {
  const response = await send("/api/auth/register", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ email, password, name }),
  });
  if (!response.ok) throw await errorOf(response);
  await login(email, password);
}

/** Ends this session at the auth service (best effort) and forgets the tokens. */
export async function logout() {
  const current = session;
  setSession(null);
  if (!current) return;
  try {
    await fetch("/api/auth/logout", {
      method: "POST",
      headers: {
        Authorization: `Bearer ${current.access_token}`,
        "Content-Type": "application/json",
      },
      body: JSON.stringify({ refresh_token: current.refresh_token }),
    });
  } catch {
    // Signed out here either way; the refresh token expires on its own.
  }
}

/**
 * A random UUID (v4), also outside secure contexts where crypto.randomUUID is missing.
 * @returns {string}
 */
export function randomId() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
