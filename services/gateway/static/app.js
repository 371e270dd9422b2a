// @ts-check
// The Bazaar storefront: catalog, account, cart, checkout, a live order tracker fed by the
// order's event stream, and the notification feed. Plain DOM, no framework; every text that
// comes from the API goes in through textContent.

import {
  ApiError,
  api,
  authorizedFetch,
  currentSession,
  errorOf,
  login,
  logout,
  onSessionChange,
  randomId,
  register,
} from "./api.js";
import { readEventStream } from "./sse.js";
import {
  FAILED_STATUSES,
  FINAL_STATUSES,
  availabilityLabel,
  calendarDay,
  clock,
  money,
  orderRef,
  reasonText,
  statusLabel,
  when,
} from "./format.js";

const TRACKED_KEY = "bazaar.tracked-order";
const FEED_POLL_MS = 5000;
/** How often the catalog shown asks again for its variants' availability, while visible. */
const CATALOG_REFRESH_MS = 10_000;

// ---------------------------------------------------------------------------------------------
// DOM helpers

/**
 * @param {string} testid
 * @returns {HTMLElement}
 */
function $(testid) {
  const found = document.querySelector(`[data-testid="${testid}"]`);
  if (!(found instanceof HTMLElement)) throw new Error(`missing element ${testid}`);
  return found;
}

/**
 * Creates an element. `attrs` keys: `class`, `text`, `dataset` (object), `on<event>`
 * (listener), anything else as an attribute (skipped when null/false).
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node | string | null | undefined | false)} children
 * @returns {HTMLElement}
 */
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child);
  }
  return node;
}

/** @param {number} ms @param {AbortSignal} [signal] */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve(undefined);
    }, { once: true });
  });
}

/** @type {ReturnType<typeof setTimeout> | undefined} */
let announceTimer;

/** Says something to screen readers, and shows it for a few seconds. */
function announce(message) {
  const region = $("announcer");
  region.textContent = "";
  clearTimeout(announceTimer);
  // A fresh text node after a tick is read out even when the message repeats.
  announceTimer = setTimeout(() => {
    region.textContent = message;
    announceTimer = setTimeout(() => {
      region.textContent = "";
    }, 5000);
  }, 30);
}

/** @param {unknown} error */
function describe(error) {
  if (error instanceof ApiError) return error.describe();
  return error instanceof Error ? error.message : String(error);
}

/**
 * Shows an error (or a hint) that belongs to no form, with a way to dismiss it.
 * @param {string} message
 * @param {"error" | "info"} [kind]
 */
function flash(message, kind = "error") {
  const box = $("flash");
  box.dataset.kind = kind;
  box.replaceChildren(
    h("span", { text: message }),
    h("button", { type: "button", class: "button button-quiet button-small", text: "Dismiss", onclick: () => { box.hidden = true; } }),
  );
  box.hidden = false;
}

/**
 * Shows a form's error: the message, and each field's problem next to its input.
 * @param {HTMLFormElement} form
 * @param {string} testid where the message goes
 * @param {unknown} error
 */
function showFormError(form, testid, error) {
  clearFormError(form, testid);
  const box = $(testid);
  box.textContent = describe(error);
  box.hidden = false;
  if (error instanceof ApiError) {
    for (const [field, problem] of Object.entries(error.fields)) {
      const input = form.elements.namedItem(field);
      if (input instanceof HTMLElement) {
        input.setAttribute("aria-invalid", "true");
        const note = h("small", { class: "field-error", id: `${input.id}-error`, text: `${problem}` });
        input.after(note);
        input.setAttribute("aria-describedby", [input.getAttribute("aria-describedby"), note.id].filter(Boolean).join(" "));
      }
    }
    const firstInvalid = form.querySelector('[aria-invalid="true"]');
    if (firstInvalid instanceof HTMLElement) firstInvalid.focus();
  }
}

/** @param {HTMLFormElement} form @param {string} testid */
function clearFormError(form, testid) {
  const box = $(testid);
  box.hidden = true;
  box.textContent = "";
  for (const note of form.querySelectorAll(".field-error")) {
    const input = form.querySelector(`[aria-describedby~="${note.id}"]`);
    if (input) {
      const rest = (input.getAttribute("aria-describedby") ?? "").split(" ").filter((id) => id && id !== note.id);
      if (rest.length) input.setAttribute("aria-describedby", rest.join(" "));
      else input.removeAttribute("aria-describedby");
    }
    note.remove();
  }
  for (const input of form.querySelectorAll('[aria-invalid="true"]')) input.removeAttribute("aria-invalid");
}

/**
 * Disables a button while `work` runs.
 * @template T
 * @param {HTMLButtonElement} button
 * @param {() => Promise<T>} work
 * @param {string} [busyText]
 */
async function busy(button, work, busyText) {
  const text = button.textContent;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  if (busyText) button.textContent = busyText;
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    if (busyText) button.textContent = text;
  }
}

// ---------------------------------------------------------------------------------------------
// State

const state = {
  /** @type {{ name: string, email: string } | null} */
  me: null,
  /** @type {{ items: any[], total_minor: number, currency: string | null }} */
  cart: { items: [], total_minor: 0, currency: null },
  catalog: { query: "", inStockOnly: false, cursor: /** @type {string | null} */ (null), count: 0 },
  /** The checkout being attempted: a retry of the same request reuses its Idempotency-Key. */
  /** @type {{ key: string, body: string } | null} */
  checkoutAttempt: null,
  /** @type {Tracker | null} */
  tracker: null,
  /** @type {ReturnType<typeof setTimeout> | null} */
  feedTimer: null,
};

// ---------------------------------------------------------------------------------------------
// Catalog

const HUES = 6;

/** A stable tile colour for a product. @param {string} slug */
function hueOf(slug) {
  let hash = 0;
  for (const c of slug) hash = (hash * 17 + c.charCodeAt(0)) >>> 0;
  return hash % HUES;
}

/** @param {any} product */
function productCard(product) {
  const variants = product.variants.map((variant) => {
    const colour = typeof variant.attributes?.colour === "string" ? variant.attributes.colour : null;
    const label = `${product.name}, ${variant.name}`;
    const item = h(
      "li",
      { class: "variant", dataset: { testid: "variant", sku: variant.sku } },
      h(
        "span",
        { class: "variant-name" },
        colour ? h("span", { class: `swatch swatch-${colour.replace(/[^a-z]/gi, "").toLowerCase()}`, "aria-hidden": "true" }) : null,
        variant.name,
      ),
      h("span", { class: "stock", dataset: { testid: "variant-stock" } }),
      h("span", { class: "price", dataset: { testid: "variant-price" }, text: money(variant.price_minor, variant.currency) }),
      h("button", {
        type: "button",
        class: "button button-small",
        dataset: { testid: "add-to-cart", sku: variant.sku, label },
        onclick: (/** @type {Event} */ event) => addToCart(/** @type {HTMLButtonElement} */ (event.currentTarget), variant.sku, `${product.name} (${variant.name})`),
      }),
    );
    showAvailability(item, variant.availability);
    return item;
  });
  const initials = product.name.split(/\s+/).slice(0, 2).map((word) => word[0]).join("");
  return h(
    "article",
    { class: "product", dataset: { testid: "product", slug: product.slug }, "aria-labelledby": `product-${product.slug}` },
    h("div", { class: `product-art hue-${hueOf(product.slug)}`, "aria-hidden": "true", text: initials }),
    h(
      "div",
      { class: "product-body" },
      h("h3", { id: `product-${product.slug}`, text: product.name }),
      h("p", { class: "muted", text: product.description }),
      h("ul", { class: "variants", "aria-label": `${product.name} variants` }, ...variants),
    ),
  );
}

/**
 * Shows a variant's availability: a sold-out one is greyed out and cannot be added (checkout
 * would refuse it anyway), a low one says so; `unknown` shows nothing and checkout decides.
 * @param {HTMLElement} item the variant's row
 * @param {string} availability
 */
function showAvailability(item, availability) {
  const soldOut = availability === "sold_out";
  item.dataset.availability = availability;
  item.classList.toggle("sold-out", soldOut);
  const stock = /** @type {HTMLElement} */ (item.querySelector('[data-testid="variant-stock"]'));
  stock.textContent = availabilityLabel(availability);
  stock.classList.toggle("stock-low", availability === "low");
  const button = /** @type {HTMLButtonElement} */ (item.querySelector('[data-testid="add-to-cart"]'));
  if (button.getAttribute("aria-busy") === "true") return; // addToCart shows it when done
  button.disabled = soldOut;
  button.textContent = soldOut ? "Sold out" : "Add";
  button.setAttribute("aria-label", soldOut ? `${button.dataset.label}: sold out` : `Add ${button.dataset.label}, to the cart`);
}

/**
 * Asks again for the availability of every variant shown and updates them in place, so a
 * shopper sees stock change without reloading: every CATALOG_REFRESH_MS while the page is
 * visible, and at once when it becomes visible or gets the focus. Without the in-stock filter,
 * so a variant that sells out is greyed out rather than taken away under the pointer.
 */
async function refreshAvailability() {
  if (document.visibilityState !== "visible" || state.catalog.count === 0) return;
  const params = new URLSearchParams({ limit: String(Math.min(state.catalog.count, 100)) });
  if (state.catalog.query) params.set("q", state.catalog.query);
  try {
    const page = await api(`/api/products?${params}`);
    for (const product of page.items) {
      for (const variant of product.variants) {
        const item = document.querySelector(`[data-testid="variant"][data-sku="${CSS.escape(variant.sku)}"]`);
        if (item instanceof HTMLElement && item.dataset.availability !== variant.availability) {
          showAvailability(item, variant.availability);
        }
      }
    }
  } catch {
    // The next round asks again; the catalog shown stays as it was.
  }
}

/** @param {boolean} more load the next page instead of starting over */
async function loadProducts(more = false) {
  const list = $("product-list");
  const params = new URLSearchParams();
  if (state.catalog.query) params.set("q", state.catalog.query);
  if (state.catalog.inStockOnly) params.set("in_stock", "true");
  if (more && state.catalog.cursor) params.set("cursor", state.catalog.cursor);
  list.setAttribute("aria-busy", "true");
  try {
    const page = await api(`/api/products${params.toString() ? `?${params}` : ""}`);
    const cards = page.items.map(productCard);
    if (more) list.append(...cards);
    else list.replaceChildren(...cards);
    state.catalog.cursor = page.next_cursor ?? null;
    state.catalog.count = (more ? state.catalog.count : 0) + page.items.length;
    if (state.catalog.count === 0) {
      list.replaceChildren(h("p", { class: "muted", dataset: { testid: "catalog-empty" }, text: state.catalog.query ? `Nothing matches “${state.catalog.query}”.` : "The catalog is empty." }));
    }
    const noun = state.catalog.count === 1 ? "product" : "products";
    $("catalog-summary").textContent = state.catalog.query
      ? `${state.catalog.count} ${noun} matching “${state.catalog.query}”`
      : `${state.catalog.count} ${noun}`;
    $("load-more").hidden = !state.catalog.cursor;
  } catch (error) {
    if (!more) list.replaceChildren(h("p", { class: "form-error", role: "alert", text: `Could not load the catalog: ${describe(error)}` }));
    else flash(`Could not load more products: ${describe(error)}`);
  } finally {
    list.setAttribute("aria-busy", "false");
  }
}

// ---------------------------------------------------------------------------------------------
// Cart and checkout

/**
 * @param {HTMLButtonElement} button
 * @param {string} sku
 * @param {string} label
 */
async function addToCart(button, sku, label) {
  if (!currentSession()) {
    flash("Sign in or create an account to add items to your cart.", "info");
    $("login-email").focus();
    return;
  }
  const line = state.cart.items.find((item) => item.sku === sku);
  await busy(button, async () => {
    try {
      await setQuantity(sku, (line?.quantity ?? 0) + 1);
      announce(`Added ${label} to the cart.`);
    } catch (error) {
      flash(`Could not add ${label} to the cart: ${describe(error)}`);
    }
  }, "Adding…");
  // Availability may have changed while it was busy.
  const item = button.closest('[data-testid="variant"]');
  if (item instanceof HTMLElement) showAvailability(item, item.dataset.availability ?? "unknown");
}

/** @param {string} sku @param {number} quantity 0 removes the line */
async function setQuantity(sku, quantity) {
  const path = `/api/cart/items/${encodeURIComponent(sku)}`;
  const cart = quantity > 0
    ? await api(path, { method: "PUT", body: { quantity } })
    : await api(path, { method: "DELETE" });
  renderCart(cart);
}

async function loadCart() {
  try {
    renderCart(await api("/api/cart"));
  } catch (error) {
    $("cart-body").replaceChildren(h("p", { class: "form-error", role: "alert", text: `Could not load the cart: ${describe(error)}` }));
  }
}

/** @param {any} cart */
function renderCart(cart) {
  state.cart = cart ?? { items: [], total_minor: 0, currency: null };
  const count = state.cart.items.reduce((sum, item) => sum + item.quantity, 0);
  $("cart-count").textContent = String(count);
  const body = $("cart-body");
  const form = $("checkout-form");
  if (!currentSession()) {
    body.replaceChildren(h("p", { class: "muted", text: "Sign in to fill a cart." }));
    form.hidden = true;
    return;
  }
  if (state.cart.items.length === 0) {
    body.replaceChildren(h("p", { class: "muted", dataset: { testid: "cart-empty" }, text: "Your cart is empty." }));
    form.hidden = true;
    return;
  }
  const lines = state.cart.items.map((item) => {
    const label = item.name;
    const change = (/** @type {number} */ quantity) => async (/** @type {Event} */ event) => {
      const button = /** @type {HTMLButtonElement} */ (event.currentTarget);
      await busy(button, async () => {
        try {
          await setQuantity(item.sku, quantity);
          announce(quantity === 0 ? `Removed ${label} from the cart.` : `${label}: quantity ${quantity}.`);
        } catch (error) {
          flash(`Could not change ${label}: ${describe(error)}`);
        }
      });
    };
    return h(
      "li",
      { class: `cart-line${item.available ? "" : " unavailable"}`, dataset: { testid: "cart-item", sku: item.sku } },
      h(
        "div",
        { class: "cart-line-main" },
        h("span", { class: "cart-name", text: label }),
        h("span", { class: "muted small", text: `${money(item.unit_price_minor, item.currency)} each` }),
        item.available ? null : h("span", { class: "tag tag-bad", text: "No longer available" }),
      ),
      h(
        "div",
        { class: "qty", role: "group", "aria-label": `Quantity of ${label}` },
        h("button", { type: "button", class: "icon-button", "aria-label": `One fewer ${label}`, text: "−", onclick: change(item.quantity - 1) }),
        h("output", { "aria-live": "polite", dataset: { testid: "cart-quantity" }, text: String(item.quantity) }),
        h("button", { type: "button", class: "icon-button", "aria-label": `One more ${label}`, text: "+", disabled: item.quantity >= 100, onclick: change(item.quantity + 1) }),
      ),
      h("span", { class: "price", text: money(item.line_total_minor, item.currency) }),
      h("button", { type: "button", class: "link-button", "aria-label": `Remove ${label}`, text: "Remove", dataset: { testid: "cart-remove" }, onclick: change(0) }),
    );
  });
  body.replaceChildren(
    h("ul", { class: "cart-lines" }, ...lines),
    h(
      "p",
      { class: "cart-total" },
      h("span", { text: "Total" }),
      h("strong", { dataset: { testid: "cart-total" }, text: state.cart.currency ? money(state.cart.total_minor, state.cart.currency) : "" }),
    ),
  );
  form.hidden = false;
}

/** @param {SubmitEvent} event */
async function checkout(event) {
  event.preventDefault();
  const form = /** @type {HTMLFormElement} */ (event.currentTarget);
  clearFormError(form, "checkout-error");
  const data = new FormData(form);
  const field = (name) => String(data.get(`shipping_address.${name}`) ?? "").trim();
  const address = {
    name: field("name"),
    line1: field("line1"),
    line2: field("line2") || null,
    postal_code: field("postal_code"),
    city: field("city"),
    country: field("country"),
  };
  const request = { payment_token: String(data.get("payment_token") ?? ""), shipping_address: address };
  // What the API would say of a missing field, said at once; the API checks the rest.
  const missing = Object.fromEntries(["name", "line1", "postal_code", "city", "country"]
    .filter((name) => !address[name])
    .map((name) => [`shipping_address.${name}`, "is required"]));
  if (Object.keys(missing).length) {
    showFormError(form, "checkout-error", new ApiError(422, "validation_failed", "Complete the shipping address", missing));
    return;
  }
  const body = JSON.stringify(request);
  // One key per checkout attempt; retrying the same attempt after a lost answer reuses it, so
  // the order is placed (and charged) once.
  if (!state.checkoutAttempt || state.checkoutAttempt.body !== body) {
    state.checkoutAttempt = { key: randomId(), body };
  }
  const key = state.checkoutAttempt.key;
  const button = /** @type {HTMLButtonElement} */ ($("checkout-submit"));
  await busy(button, async () => {
    try {
      const placed = await api("/api/orders", { method: "POST", body: request, headers: { "Idempotency-Key": key } });
      state.checkoutAttempt = null;
      announce(`Order ${orderRef(placed.id)} placed; waiting for payment.`);
      renderCart({ items: [], total_minor: 0, currency: null });
      track(placed.id);
      loadOrders();
    } catch (error) {
      const retryable = error instanceof ApiError && (error.status === 0 || error.status >= 500);
      if (!retryable) state.checkoutAttempt = null;
      showFormError(form, "checkout-error", retryable
        ? new ApiError(error.status, error.code, `${error.message}. Placing the order again is safe: it will not be placed twice`)
        : error);
    }
  }, "Placing order…");
}

// ---------------------------------------------------------------------------------------------
// The live order tracker

const HAPPY_PATH = ["pending", "paid", "shipping_scheduled", "shipped", "delivered"];
const STEP_LABELS = { pending: "Order placed", paid: "Paid", shipping_scheduled: "Shipment scheduled", shipped: "Shipped", delivered: "Delivered" };

class Tracker {
  /** @param {string} orderId */
  constructor(orderId) {
    this.orderId = orderId;
    this.controller = new AbortController();
    /** The id of the last status change shown; the stream replays from the start. */
    this.lastEventId = 0;
    /** @type {{ status: string, reason: string | null, at: string }[]} */
    this.changes = [];
    /** @type {any} */
    this.order = null;
    this.final = false;
    /** @type {Promise<void> | null} */
    this.refreshing = null;
    this.refreshAgain = false;
  }

  stop() {
    this.controller.abort();
  }

  get status() {
    return this.changes.at(-1)?.status ?? this.order?.status ?? "pending";
  }

  async start() {
    const panel = $("order-panel");
    panel.hidden = false;
    panel.dataset.orderId = this.orderId;
    $("order-ref").textContent = orderRef(this.orderId);
    $("order-id").textContent = this.orderId;
    $("order-timeline").replaceChildren();
    $("shipment").hidden = true;
    this.render();
    await Promise.all([this.refreshOrder(), this.follow()]);
  }

  /** Reads the order's event stream, reconnecting with backoff until a final status. */
  async follow() {
    const signal = this.controller.signal;
    let delay = 1000;
    while (!signal.aborted && !this.final) {
      this.setStreamState("connecting");
      try {
        /** @type {Record<string, string>} */
        const headers = { Accept: "text/event-stream" };
        if (this.lastEventId) headers["Last-Event-ID"] = String(this.lastEventId);
        const response = await authorizedFetch(`/api/orders/${encodeURIComponent(this.orderId)}/events`, { headers, signal, cache: "no-store" });
        if (!response.ok) {
          const error = await errorOf(response);
          if (response.status < 500 && response.status !== 429) {
            this.setStreamState("failed");
            flash(`Cannot follow order ${orderRef(this.orderId)}: ${error.describe()}`);
            return;
          }
          throw error;
        }
        this.setStreamState("live");
        await readEventStream(response, (event) => {
          if (event.type === "status") this.onStatus(event.id, event.data);
        }, signal);
        delay = 1000;
      } catch (error) {
        if (signal.aborted) return;
        console.warn("order stream interrupted", error);
      }
      if (this.final || signal.aborted) break;
      this.setStreamState("reconnecting");
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 15000);
    }
    if (!signal.aborted) this.setStreamState(this.final ? "done" : "idle");
  }

  /** @param {string} id @param {string} data */
  onStatus(id, data) {
    const sequence = Number(id);
    if (Number.isFinite(sequence) && sequence > 0) {
      if (sequence <= this.lastEventId) return; // replayed after a reconnect
      this.lastEventId = sequence;
    }
    let change;
    try {
      change = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof change?.status !== "string") return;
    this.changes.push(change);
    this.final = FINAL_STATUSES.has(change.status);
    $("order-timeline").append(
      h(
        "li",
        { class: `event event-${FAILED_STATUSES.has(change.status) ? "bad" : "good"}`, dataset: { testid: "status-event", status: change.status } },
        h("span", { class: "event-status", text: statusLabel(change.status) }),
        h("time", { datetime: change.at, class: "muted small", text: clock(change.at) }),
      ),
    );
    this.render();
    announce(`Order ${orderRef(this.orderId)}: ${statusLabel(change.status)}.${change.reason ? ` ${reasonText(change.reason)}` : ""}`);
    if (change.status !== "pending") {
      this.refreshOrder();
      refreshFeedSoon();
      loadOrders();
    }
  }

  /** Fetches the order (items, total, shipment); one request at a time, the latest wins. */
  refreshOrder() {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.refreshAgain = false;
        try {
          this.order = await api(`/api/orders/${encodeURIComponent(this.orderId)}`, { signal: this.controller.signal });
          this.render();
        } catch (error) {
          if (this.controller.signal.aborted) return;
          if (error instanceof ApiError && error.status === 404) {
            flash(`Order ${orderRef(this.orderId)} was not found.`);
            this.stop();
            return;
          }
          console.warn("could not load the order", error);
        }
      } while (this.refreshAgain && !this.controller.signal.aborted);
    })().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  /** @param {"idle" | "connecting" | "live" | "reconnecting" | "done" | "failed"} value */
  setStreamState(value) {
    const labels = { idle: "", connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", done: "Final", failed: "Not live" };
    const badge = $("stream-state");
    badge.dataset.state = value;
    badge.textContent = labels[value];
  }

  render() {
    const status = this.status;
    const order = this.order;
    const badge = $("order-status");
    badge.dataset.status = status;
    badge.className = `status status-${status}`;
    badge.textContent = statusLabel(status);
    $("order-total").textContent = order
      ? `${money(order.total_minor, order.currency)} · ${order.items.reduce((sum, item) => sum + item.quantity, 0)} item(s)`
      : "";

    // Progress: the happy path, or how far it got and where it stopped.
    const reached = new Set([...this.changes.map((change) => change.status), status]);
    const failed = FAILED_STATUSES.has(status);
    const steps = [];
    for (const step of HAPPY_PATH) {
      const done = reached.has(step) || HAPPY_PATH.indexOf(step) < HAPPY_PATH.indexOf(status);
      if (failed && !done) break;
      const current = step === status;
      steps.push(h("li", {
        class: `step ${current ? "step-current" : done ? "step-done" : "step-todo"}`,
        "aria-current": current ? "step" : null,
        dataset: { step },
        text: STEP_LABELS[step],
      }));
    }
    if (failed) steps.push(h("li", { class: "step step-failed", "aria-current": "step", dataset: { step: status }, text: statusLabel(status) }));
    $("order-steps").replaceChildren(...steps);

    const reason = this.changes.findLast((change) => change.reason)?.reason ?? order?.reason ?? null;
    const reasonBox = $("order-reason");
    if (failed) {
      reasonBox.dataset.reason = reason ?? "";
      const parts = [
        h("strong", { text: `${statusLabel(status)}: ` }),
        reasonText(reason, order?.rejected_sku),
        " ",
        reason ? h("code", { text: reason }) : null,
        order?.refunded ? h("span", { text: " The payment was refunded." }) : null,
      ];
      reasonBox.replaceChildren(...parts.filter((part) => part !== null));
      reasonBox.hidden = false;
    } else {
      reasonBox.hidden = true;
    }

    const cancellable = status === "pending" || status === "paid";
    let cancel = document.querySelector('[data-testid="order-cancel"]');
    if (cancellable && !cancel) {
      cancel = h("button", { type: "button", class: "button button-quiet button-small", dataset: { testid: "order-cancel" }, text: "Cancel order", onclick: () => this.cancel() });
      $("order-steps").after(cancel);
    } else if (!cancellable && cancel) {
      cancel.remove();
    }

    const shipment = order?.shipment;
    const box = $("shipment");
    if (shipment) {
      $("shipment-carrier").textContent = shipment.carrier ?? "—";
      $("shipment-tracking").textContent = shipment.tracking_number ?? "—";
      $("shipment-pickup").textContent = calendarDay(shipment.pickup_date) || "—";
      $("shipment-status").textContent = shipment.status;
      box.hidden = false;
    } else {
      box.hidden = true;
    }
  }

  async cancel() {
    const button = /** @type {HTMLButtonElement | null} */ (document.querySelector('[data-testid="order-cancel"]'));
    if (!button) return;
    await busy(button, async () => {
      try {
        await api(`/api/orders/${encodeURIComponent(this.orderId)}/cancel`, { method: "POST" });
        announce(`Cancelling order ${orderRef(this.orderId)}.`);
      } catch (error) {
        flash(`Could not cancel the order: ${describe(error)}`);
      }
    }, "Cancelling…");
  }
}

/** Shows an order in the tracker and follows its status live. @param {string} orderId */
function track(orderId) {
  state.tracker?.stop();
  const tracker = new Tracker(orderId);
  state.tracker = tracker;
  try {
    sessionStorage.setItem(TRACKED_KEY, orderId);
  } catch {
    // Not remembered across reloads; nothing else changes.
  }
  tracker.start();
  $("order-panel").scrollIntoView({ block: "nearest", behavior: "smooth" });
}

// ---------------------------------------------------------------------------------------------
// Order history

/** Orders per page of the orders panel. */
const ORDERS_PAGE = 10;

/** The orders panel: the caller's newest page of orders (returned), older pages on demand. */
async function loadOrders() {
  if (!currentSession()) return;
  try {
    const page = await api(`/api/orders?limit=${ORDERS_PAGE}`);
    $("orders-panel").hidden = page.items.length === 0;
    $("order-list").replaceChildren(...page.items.map(orderRow));
    offerOlderOrders(page.next);
    return page.items;
  } catch (error) {
    console.warn("could not load orders", error);
    return [];
  }
}

/** Appends the page of orders placed before the last one shown. */
async function loadOlderOrders() {
  const button = /** @type {HTMLButtonElement} */ ($("orders-older"));
  await busy(button, async () => {
    try {
      const page = await api(`/api/orders?limit=${ORDERS_PAGE}&before=${encodeURIComponent(button.dataset.before ?? "")}`);
      $("order-list").append(...page.items.map(orderRow));
      offerOlderOrders(page.next);
    } catch (error) {
      flash(`Could not load older orders: ${describe(error)}`);
    }
  }, "Loading…");
}

/** @param {string | null | undefined} next the `before` of the next page, if there is one */
function offerOlderOrders(next) {
  const button = $("orders-older");
  button.hidden = !next;
  button.dataset.before = next ?? "";
}

/** One order in the orders panel: reference, date, status, shipment, total. @param {any} order */
function orderRow(order) {
  const shipment = order.shipment;
  return h(
    "li",
    { class: "row", dataset: { testid: "order-row", orderId: order.id, status: order.status } },
    h("strong", { class: "row-ref", text: orderRef(order.id) }),
    h("span", { class: "row-when muted small", text: when(order.created_at) }),
    h("span", { class: `row-status status status-${order.status}`, text: statusLabel(order.status) }),
    h("span", {
      class: "row-shipment muted small",
      dataset: { testid: "order-row-shipment" },
      text: shipment ? `${shipment.carrier ?? "Parcel"} ${shipment.tracking_number ?? ""} · ${shipment.status}` : "",
    }),
    h("span", { class: "row-price price", text: money(order.total_minor, order.currency) }),
    h("button", {
      type: "button",
      class: "link-button",
      text: "Track",
      "aria-label": `Track order ${orderRef(order.id)}`,
      onclick: () => track(order.id),
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Notifications

async function loadFeed() {
  if (!currentSession()) return;
  try {
    renderFeed(await api("/api/notifications?limit=20"));
  } catch (error) {
    console.warn("could not load notifications", error);
  }
}

/** @param {{ items: any[], unread: number }} feed */
function renderFeed(feed) {
  $("notifications-panel").hidden = false;
  $("notifications-link").hidden = false;
  for (const testid of ["unread-count", "unread-badge"]) {
    const badge = $(testid);
    badge.textContent = String(feed.unread);
    badge.dataset.count = String(feed.unread);
    badge.classList.toggle("badge-muted", feed.unread === 0);
  }
  $("unread-badge").setAttribute("aria-label", `${feed.unread} unread`);
  const list = $("notification-list");
  if (feed.items.length === 0) {
    list.replaceChildren(h("li", { class: "muted", dataset: { testid: "notifications-empty" }, text: "Nothing yet. Updates about your orders appear here." }));
    return;
  }
  list.replaceChildren(...feed.items.map((item) => h(
    "li",
    { class: `note${item.read ? "" : " note-unread"}`, dataset: { testid: "notification", id: item.id, kind: item.kind, orderId: item.order_id ?? "", read: String(item.read) } },
    h("strong", { class: "note-subject", text: item.subject }),
    h("time", { class: "muted small", datetime: item.created_at, text: when(item.created_at) }),
    h("p", { class: "note-body", text: item.body }),
    item.read
      ? h("span", { class: "muted small", text: "Read" })
      : h("button", {
        type: "button",
        class: "link-button",
        text: "Mark as read",
        "aria-label": `Mark “${item.subject}” as read`,
        dataset: { testid: "mark-read" },
        onclick: (/** @type {Event} */ event) => markRead(/** @type {HTMLButtonElement} */ (event.currentTarget), item.id),
      }),
  )));
}

/** @param {HTMLButtonElement} button @param {string} id */
async function markRead(button, id) {
  await busy(button, async () => {
    try {
      await api(`/api/notifications/${encodeURIComponent(id)}/read`, { method: "POST" });
      await loadFeed();
      announce("Notification marked as read.");
    } catch (error) {
      flash(`Could not mark the notification read: ${describe(error)}`);
    }
  });
}

/** Polls the feed while signed in and the page is visible. */
function scheduleFeed(delay = FEED_POLL_MS) {
  if (state.feedTimer) clearTimeout(state.feedTimer);
  state.feedTimer = null;
  if (!currentSession()) return;
  state.feedTimer = setTimeout(async () => {
    if (document.visibilityState === "visible") await loadFeed();
    scheduleFeed();
  }, delay);
}

/** After an order changes, its notice follows shortly: look sooner than the next poll. */
function refreshFeedSoon() {
  scheduleFeed(800);
}

// ---------------------------------------------------------------------------------------------
// Account

/** @param {"login" | "register"} which */
function showTab(which) {
  for (const name of ["login", "register"]) {
    const selected = name === which;
    const tab = $(`tab-${name}`);
    tab.setAttribute("aria-selected", String(selected));
    tab.tabIndex = selected ? 0 : -1;
    $(`${name}-form`).hidden = !selected;
  }
}

/** @param {SubmitEvent} event */
async function onLogin(event) {
  event.preventDefault();
  const form = /** @type {HTMLFormElement} */ (event.currentTarget);
  clearFormError(form, "login-error");
  const data = new FormData(form);
  const button = /** @type {HTMLButtonElement} */ ($("login-submit"));
  await busy(button, async () => {
    try {
      await login(String(data.get("email") ?? "").trim(), String(data.get("password") ?? ""));
      form.reset();
    } catch (error) {
      showFormError(form, "login-error", error);
    }
  }, "Signing in…");
}

/** @param {SubmitEvent} event */
async function onRegister(event) {
  event.preventDefault();
  const form = /** @type {HTMLFormElement} */ (event.currentTarget);
  clearFormError(form, "register-error");
  const data = new FormData(form);
  const button = /** @type {HTMLButtonElement} */ ($("register-submit"));
  await busy(button, async () => {
    try {
      await register(String(data.get("email") ?? "").trim(), String(data.get("password") ?? ""), String(data.get("name") ?? "").trim());
      form.reset();
      announce("Account created; you are signed in.");
    } catch (error) {
      showFormError(form, "register-error", error);
    }
  }, "Creating account…");
}

/** Everything that depends on who is signed in. */
async function onSignedIn() {
  const session = currentSession();
  if (!session) return;
  $("auth-forms").hidden = true;
  $("sign-in-link").hidden = true;
  $("account-summary").hidden = false;
  $("sign-out").hidden = false;
  $("account-email").textContent = session.email;
  $("account-name").textContent = state.me?.name ?? session.email;
  $("signed-in-as").textContent = session.email;
  $("signed-in-as").hidden = false;
  $("flash").hidden = true;
  const [me, , orders] = await Promise.all([
    api("/api/auth/me").catch(() => null),
    loadCart(),
    loadOrders(),
    loadFeed(),
  ]);
  if (!currentSession()) return;
  if (me) {
    state.me = { name: me.name, email: me.email };
    $("account-name").textContent = me.name;
    $("signed-in-as").textContent = me.name;
  }
  scheduleFeed();
  if (!state.tracker) {
    let remembered = null;
    try {
      remembered = sessionStorage.getItem(TRACKED_KEY);
    } catch {
      // No storage: fall back to the latest order below.
    }
    const known = (orders ?? []).find((order) => order.id === remembered);
    const unfinished = (orders ?? []).find((order) => !FINAL_STATUSES.has(order.status));
    const resume = known ?? unfinished;
    if (resume) track(resume.id);
  }
}

/** @param {string | undefined} why */
function onSignedOut(why) {
  state.me = null;
  state.tracker?.stop();
  state.tracker = null;
  state.checkoutAttempt = null;
  if (state.feedTimer) clearTimeout(state.feedTimer);
  try {
    sessionStorage.removeItem(TRACKED_KEY);
  } catch {
    // Nothing to forget.
  }
  $("auth-forms").hidden = false;
  $("sign-in-link").hidden = false;
  $("account-summary").hidden = true;
  $("sign-out").hidden = true;
  $("signed-in-as").hidden = true;
  for (const id of ["order-panel", "orders-panel", "notifications-panel", "notifications-link"]) $(id).hidden = true;
  renderCart(null);
  if (why) flash(why, "info");
}

// ---------------------------------------------------------------------------------------------
// Start

/**
 * Countries offered at checkout (ISO 3166-1 alpha-2; the API takes any), named in the browser's
 * language. The first is selected: the shop's home country (the shipping service's
 * `shipping.home_country`), where parcels go as domestic; any other ships international.
 */
const SHIPPING_COUNTRIES = ["DE", "AT", "BE", "BG", "CH", "CY", "CZ", "DK", "EE", "ES", "FI", "FR", "GB", "GR", "HR", "HU",
  "IE", "IS", "IT", "LI", "LT", "LU", "LV", "MT", "NL", "NO", "PL", "PT", "RO", "SE", "SI", "SK", "US", "CA", "AU", "JP"];

function fillCountries() {
  const names = new Intl.DisplayNames([navigator.language, "en"], { type: "region" });
  const [home, ...abroad] = SHIPPING_COUNTRIES;
  const option = (code) => h("option", { value: code, text: names.of(code) ?? code });
  $("address-country").replaceChildren(
    option(home),
    ...abroad.map((code) => ({ code, name: names.of(code) ?? code }))
      .sort((a, b) => a.name.localeCompare(b.name))
      .map(({ code }) => option(code)),
  );
}

function start() {
  fillCountries();
  $("tab-login").addEventListener("click", () => showTab("login"));
  $("tab-register").addEventListener("click", () => showTab("register"));
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    tab.addEventListener("keydown", (/** @type {Event} */ event) => {
      const key = /** @type {KeyboardEvent} */ (event).key;
      if (key !== "ArrowLeft" && key !== "ArrowRight") return;
      const next = $("tab-login").getAttribute("aria-selected") === "true" ? "register" : "login";
      showTab(next);
      $(`tab-${next}`).focus();
    });
  }
  $("login-form").addEventListener("submit", onLogin);
  $("register-form").addEventListener("submit", onRegister);
  $("checkout-form").addEventListener("submit", checkout);
  $("sign-out").addEventListener("click", async () => {
    await logout();
    announce("Signed out.");
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.catalog.query = /** @type {HTMLInputElement} */ ($("search-input")).value.trim();
    state.catalog.cursor = null;
    loadProducts();
  });
  $("in-stock-only").addEventListener("change", (event) => {
    state.catalog.inStockOnly = /** @type {HTMLInputElement} */ (event.currentTarget).checked;
    state.catalog.cursor = null;
    loadProducts();
  });
  $("load-more").addEventListener("click", () => loadProducts(true));
  $("orders-older").addEventListener("click", loadOlderOrders);
  $("sign-in-link").addEventListener("click", (event) => {
    event.preventDefault();
    $("account-panel").scrollIntoView({ block: "start" });
    showTab("login");
    $("login-email").focus();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible") return;
    loadFeed();
    refreshAvailability();
  });
  window.addEventListener("focus", refreshAvailability);
  setInterval(refreshAvailability, CATALOG_REFRESH_MS);
  onSessionChange((session, why) => {
    if (session) {
      // A refreshed token changes nothing on the page; a new sign-in loads the account.
      if ($("auth-forms").hidden) return;
      onSignedIn();
    } else {
      onSignedOut(why);
    }
  });

  loadProducts();
  if (currentSession()) onSignedIn();
  else renderCart(null);
  document.body.dataset.ready = "true";
}

start();
