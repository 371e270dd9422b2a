// End-to-end tests of the storefront in headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core) against a running Bazaar: the gateway at BAZAAR_BASE_URL and every service
// behind it. tests/browser/run.sh starts one when none is running.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const BASE_URL = process.env.BAZAAR_BASE_URL ?? "http://127.0.0.1:8080";
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), "artifacts");
/** How long the saga may take to move an order (inventory, payment, shipping over Kafka). */
const SAGA_TIMEOUT = 60_000;
const PASSWORD = "correct horse battery staple";

/** @type {import("playwright-core").BrowserContext} */
let context;
let userDataDir = "";
const startedAt = Date.now();

before(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  for (const name of await readdir(ARTIFACTS)) {
    if (name.endsWith(".png")) await rm(path.join(ARTIFACTS, name));
  }
  userDataDir = await mkdtemp(path.join(tmpdir(), "bazaar-chromium-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
    viewport: { width: 1280, height: 900 },
    locale: "en-GB",
    timezoneId: "UTC",
  });
  context.setDefaultTimeout(15_000);
});

after(async () => {
  await context?.close();
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
  console.log(`browser tests ran for ${((Date.now() - startedAt) / 1000).toFixed(1)} s`);
});

/** A page with its console errors, failed requests and navigations recorded. */
async function openStorefront() {
  const page = await context.newPage();
  const problems = [];
  const navigations = [];
  const streams = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console error: ${message.text()}`);
  });
  page.on("framenavigated", (frame) => {
    if (frame === page.mainFrame()) navigations.push(frame.url());
  });
  page.on("request", (request) => {
    if (/\/api\/orders\/[^/]+\/events$/.test(new URL(request.url()).pathname)) {
      streams.push({ url: request.url(), authorization: request.headers().authorization ?? "" });
    }
  });
  const response = await page.goto(`${BASE_URL}/`);
  assert.equal(response?.status(), 200);
  await page.locator("body[data-ready=true]").waitFor();
  await page.locator('[data-testid="product"]').first().waitFor();
  return { page, problems, navigations, streams };
}

async function screenshot(page, name) {
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
  return file;
}

/** An admin's access token: tests/browser/run.sh creates the admin and passes its credentials. */
async function adminToken() {
  const email = process.env.BAZAAR_BROWSER_ADMIN_EMAIL;
  const password = process.env.BAZAAR_BROWSER_ADMIN_PASSWORD;
  assert.ok(email && password, "BAZAAR_BROWSER_ADMIN_EMAIL and BAZAAR_BROWSER_ADMIN_PASSWORD (tests/browser/run.sh sets them)");
  const response = await fetch(`${BASE_URL}/api/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password }),
  });
  const body = await response.json();
  assert.equal(response.status, 200, `admin login: ${JSON.stringify(body)}`);
  return body.access_token;
}

/** An admin's call to the API; returns the answer's JSON, failing on anything but 2xx. */
async function adminCall(token, method, apiPath, body) {
  const response = await fetch(`${BASE_URL}${apiPath}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${apiPath}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Moves an order's shipment on as an admin: `dispatch` or `deliver`. */
async function adminShipment(token, orderId, step) {
  await adminCall(token, "POST", `/api/admin/shipments/${orderId}/${step}`);
}

/**
 * Puts a product of this run on sale as an admin, each variant `{ sku, name, price_minor,
 * currency, stock }`, runs `body` with it, then archives it so reruns on the same system start
 * from the demo catalog.
 */
async function withProduct(token, { slug, name, variants }, body) {
  const product = await adminCall(token, "POST", "/api/admin/products", {
    slug,
    name,
    description: "Made by a browser test.",
    variants: variants.map(({ stock, ...variant }) => variant),
  });
  try {
    for (const { sku, stock } of variants) await setStock(token, sku, stock);
    await body(product);
  } finally {
    await adminCall(token, "PUT", `/api/admin/products/${product.id}`, {
      slug,
      name,
      variants: product.variants.map(({ sku, name: variantName, attributes, price_minor, currency }) => ({ sku, name: variantName, attributes, price_minor, currency })),
      archived: true,
    });
  }
}

async function setStock(token, sku, onHand) {
  await adminCall(token, "PUT", `/api/admin/inventory/${encodeURIComponent(sku)}`, { on_hand: onHand });
}

/** A tag for this run's own products and SKUs (upper case letters and digits). */
function runTag() {
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`.toUpperCase();
}

function uniqueEmail(tag) {
  return `shopper-${tag}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}@example.com`;
}

/** Registers a new customer through the page; registration signs them in. */
async function registerCustomer(page, tag) {
  const email = uniqueEmail(tag);
  await page.getByRole("tab", { name: "Create account" }).click();
  await page.getByLabel("Name").fill(`Test Shopper ${tag}`);
  await page.locator('[data-testid="register-email"]').fill(email);
  await page.locator('[data-testid="register-password"]').fill(PASSWORD);
  await page.locator('[data-testid="register-submit"]').click();
  await page.locator('[data-testid="account-summary"]').waitFor();
  await assertText(page.locator('[data-testid="account-name"]'), `Test Shopper ${tag}`);
  return email;
}

async function assertText(locator, expected, timeout = 15_000) {
  await locator.filter({ hasText: expected }).first().waitFor({ timeout });
}

/** Searches the catalog for exactly one product and returns its card. */
async function searchFor(page, query, slug) {
  await page.getByLabel("Search products").fill(query);
  await page.getByRole("button", { name: "Search" }).click();
  const product = page.locator(`[data-testid="product"][data-slug="${slug}"]`);
  await product.waitFor();
  await page.locator('[data-testid="product"]').nth(1).waitFor({ state: "detached" });
  return product;
}

/** A shipping address in the shop's home country. */
const HOME_ADDRESS = { name: "Test Shopper", line1: "1 Test Street", postal_code: "12345", city: "Springfield", country: "DE" };

/** Fills the checkout's address fields (a missing one is left empty). */
async function fillAddress(page, address) {
  for (const field of ["name", "line1", "line2", "postal_code", "city"]) {
    await page.locator(`[data-testid="address-${field.replace("_", "-")}"]`).fill(address[field] ?? "");
  }
  if (address.country) await page.locator('[data-testid="address-country"]').selectOption(address.country);
}

/** Searches the catalog, adds one SKU and checks out with the given card; returns the order id. */
async function buy(page, { query, slug, sku, token, shot }) {
  const product = await searchFor(page, query, slug);
  await product.locator(`[data-testid="add-to-cart"][data-sku="${sku}"]`).click();
  const line = page.locator(`[data-testid="cart-item"][data-sku="${sku}"]`);
  await line.waitFor();
  await assertText(line.locator('[data-testid="cart-quantity"]'), "1");
  assert.equal(await page.locator('[data-testid="cart-count"]').textContent(), "1");

  await fillAddress(page, HOME_ADDRESS);
  await page.getByLabel("Test payment card").selectOption(token);
  if (shot) await screenshot(page, shot);
  await page.locator('[data-testid="checkout-submit"]').click();
  const panel = page.locator('[data-testid="order-panel"]');
  await panel.waitFor();
  await page.locator('[data-testid="cart-empty"]').waitFor();
  const orderId = await panel.getAttribute("data-order-id");
  assert.match(orderId ?? "", /^[0-9a-f-]{36}$/);
  return orderId;
}

/** Records, in the page, each status the live tracker shows, in order of appearance. */
async function recordStatuses(page) {
  await page.evaluate(() => {
    window.__bazaarMarker = "same document";
    window.__seenStatuses = [];
    const timeline = document.querySelector('[data-testid="order-timeline"]');
    const note = () => {
      for (const item of timeline.querySelectorAll('[data-testid="status-event"]')) {
        if (!item.dataset.recorded) {
          item.dataset.recorded = "1";
          window.__seenStatuses.push(item.dataset.status);
        }
      }
    };
    new MutationObserver(note).observe(timeline, { childList: true });
    note();
  });
}

/**
 * A test on a fresh storefront page; a failure leaves a screenshot `failed-<tag>.png` of the
 * page as it was.
 */
function scenario(title, tag, timeout, body) {
  test(title, { timeout }, async () => {
    const opened = await openStorefront();
    try {
      await body(opened);
    } catch (error) {
      await screenshot(opened.page, `failed-${tag}`).catch(() => {});
      throw error;
    } finally {
      await opened.page.close();
    }
  });
}

scenario("a new customer registers, buys with tok_visa and watches the order go live to shipping, then to delivered", "visa", 180_000, async ({ page, problems, navigations, streams }) => {

  // Browse: products with variants and formatted prices.
  const tee = page.locator('[data-testid="product"][data-slug="classic-tee"]');
  await tee.waitFor();
  assert.equal(await tee.locator('[data-testid="variant"]').count(), 3);
  await assertText(tee.locator('[data-testid="variant-price"]'), "€19.99");

  await registerCustomer(page, "visa");
  await screenshot(page, "a-catalog-signed-in");
  await recordStatuses(page);
  const navigationsBefore = navigations.length;

  const orderId = await buy(page, { query: "tote", slug: "canvas-tote", sku: "TOTE-NAT", token: "tok_visa", shot: "a-cart-checkout" });
  await assertText(page.locator('[data-testid="order-total"]'), "€12.50");

  // Live: paid, then shipping_scheduled, pushed by the event stream into this same document.
  const event = (status) => page.locator(`[data-testid="status-event"][data-status="${status}"]`);
  await event("paid").waitFor({ timeout: SAGA_TIMEOUT });
  await event("shipping_scheduled").waitFor({ timeout: SAGA_TIMEOUT });
  await page.locator('[data-testid="order-status"][data-status="shipping_scheduled"]').waitFor();
  const seen = await page.evaluate(() => window.__seenStatuses);
  assert.deepEqual(seen, ["pending", "paid", "shipping_scheduled"], `statuses in order of appearance: ${seen}`);
  assert.equal(await page.evaluate(() => window.__bazaarMarker), "same document", "the page was reloaded");
  assert.equal(navigations.length, navigationsBefore, `navigations: ${navigations.slice(navigationsBefore)}`);
  assert.ok(streams.some((stream) => stream.url.includes(orderId) && stream.authorization.startsWith("Bearer ")),
    "the order's event stream was requested with the bearer token");

  // The shipment, from GET /api/orders/{id}.
  const shipment = page.locator('[data-testid="shipment"]');
  await shipment.waitFor();
  assert.match(await page.locator('[data-testid="shipment-carrier"]').textContent(), /^Bazaar (Post|Parcel|Freight)$/);
  assert.match(await page.locator('[data-testid="shipment-tracking"]').textContent(), /^B[PCF]\d{12}$/);
  assert.equal(await page.locator('[data-testid="shipment-status"]').textContent(), "scheduled");
  assert.notEqual((await page.locator('[data-testid="shipment-pickup"]').textContent()).trim(), "");
  // Not final: the stream stays open for the parcel's dispatch and delivery.
  await page.locator('[data-testid="stream-state"][data-state="live"]').waitFor();
  await page.locator('[data-testid="order-steps"] [data-step="delivered"].step-todo').waitFor();
  await screenshot(page, "a-order-shipping-scheduled");

  // The notification feed: this order's two notices arrive (from two topics, in either order),
  // unread, and one can be marked read.
  const notices = page.locator(`[data-testid="notification"][data-order-id="${orderId}"]`);
  for (const kind of ["order_paid", "shipment_scheduled"]) {
    await notices.and(page.locator(`[data-kind="${kind}"]`)).waitFor({ timeout: SAGA_TIMEOUT });
  }
  const unread = async () => Number(await page.locator('[data-testid="unread-count"]').textContent());
  const before = await unread();
  assert.ok(before >= 1, `unread count ${before}`);
  assert.equal(await notices.count(), 2);
  const first = page.locator('[data-testid="notification"][data-read="false"]').first();
  const noticeId = await first.getAttribute("data-id");
  await first.locator('[data-testid="mark-read"]').click();
  await page.locator(`[data-testid="notification"][data-id="${noticeId}"][data-read="true"]`).waitFor();
  assert.equal(await unread(), before - 1);
  await screenshot(page, "a-notifications");

  // The order history lists it.
  await page.locator(`[data-testid="order-row"][data-order-id="${orderId}"][data-status="shipping_scheduled"]`).waitFor();

  // The warehouse dispatches the parcel and the carrier delivers it (an admin, through the
  // API): the same page follows the order to `delivered`, and the stream ends there.
  const admin = await adminToken();
  await adminShipment(admin, orderId, "dispatch");
  await event("shipped").waitFor({ timeout: SAGA_TIMEOUT });
  await adminShipment(admin, orderId, "deliver");
  await event("delivered").waitFor({ timeout: SAGA_TIMEOUT });
  await page.locator('[data-testid="order-status"][data-status="delivered"]').waitFor();
  await page.locator('[data-testid="stream-state"][data-state="done"]').waitFor();
  const timeline = await page.evaluate(() => window.__seenStatuses);
  assert.deepEqual(timeline, ["pending", "paid", "shipping_scheduled", "shipped", "delivered"], `the whole timeline: ${timeline}`);
  await page.locator(`[data-testid="order-row"][data-order-id="${orderId}"][data-status="delivered"]`).waitFor();
  await screenshot(page, "a-order-delivered");
  assert.deepEqual(problems, []);
});

scenario("a declined card cancels the order and shows the reason", "declined", 180_000, async ({ page, problems }) => {
  await registerCustomer(page, "declined");
  await recordStatuses(page);

  await buy(page, { query: "espresso", slug: "espresso-cup", sku: "CUP-ESP-GRY", token: "tok_chargeDeclined" });
  await page.locator('[data-testid="status-event"][data-status="cancelled"]').waitFor({ timeout: SAGA_TIMEOUT });
  const reason = page.locator('[data-testid="order-reason"]');
  await reason.waitFor();
  assert.equal(await reason.getAttribute("data-reason"), "payment_declined");
  assert.match(await reason.textContent(), /payment_declined/);
  assert.match(await reason.textContent(), /declined/i);
  assert.equal(await page.locator('[data-testid="order-status"]').getAttribute("data-status"), "cancelled");
  const seen = await page.evaluate(() => window.__seenStatuses);
  assert.deepEqual(seen, ["pending", "cancelled"]);
  assert.equal(await page.locator('[data-testid="shipment"]').isVisible(), false);
  await page.locator('[data-testid="stream-state"][data-state="done"]').waitFor();
  await screenshot(page, "b-order-declined");
  assert.deepEqual(problems, []);
});

scenario("wrong credentials and invalid registrations show the API's message next to the fields", "errors", 60_000, async ({ page, problems }) => {
  await page.locator('[data-testid="login-email"]').fill(uniqueEmail("nobody"));
  await page.locator('[data-testid="login-password"]').fill("not the password");
  await page.locator('[data-testid="login-submit"]').click();
  await assertText(page.locator('[data-testid="login-error"]'), "wrong e-mail address or password");

  await page.getByRole("tab", { name: "Create account" }).click();
  await page.getByLabel("Name").fill("Short Password");
  await page.locator('[data-testid="register-email"]').fill(uniqueEmail("short"));
  await page.locator('[data-testid="register-password"]').fill("short");
  await page.locator('[data-testid="register-submit"]').click();
  await page.locator('[data-testid="register-error"]').waitFor();
  assert.equal(await page.locator('[data-testid="register-password"]').getAttribute("aria-invalid"), "true");
  assert.ok(await page.locator("#register-password-error").isVisible());

  // Adding to the cart while signed out asks to sign in.
  await page.locator('[data-testid="add-to-cart"]').first().click();
  await assertText(page.locator('[data-testid="flash"]'), "Sign in");
  await screenshot(page, "c-errors");
  // The browser logs the refused requests themselves (401, 422) as console errors.
  assert.deepEqual(problems.filter((problem) => !/status of (401|422)/.test(problem)), []);
});

scenario("the address form names each wrong field, on the page and from the API, and ships abroad once fixed", "address", 120_000, async ({ page, problems }) => {
  await registerCustomer(page, "address");
  const product = await searchFor(page, "tote", "canvas-tote");
  await product.locator('[data-testid="add-to-cart"][data-sku="TOTE-NAT"]').click();
  await page.locator('[data-testid="cart-item"][data-sku="TOTE-NAT"]').waitFor();
  const invalid = (field) => page.locator(`[data-testid="address-${field}"][aria-invalid="true"]`);

  // Missing fields are named before anything is sent.
  await fillAddress(page, { ...HOME_ADDRESS, line1: "", city: "" });
  await page.locator('[data-testid="checkout-submit"]').click();
  await invalid("line1").waitFor();
  await invalid("city").waitFor();
  assert.match(await page.locator("#address-city-error").textContent(), /required/);
  assert.equal(await invalid("postal-code").count(), 0);

  // What only the API knows (a postal code with a semicolon) comes back next to its field.
  await fillAddress(page, { ...HOME_ADDRESS, postal_code: "75005; --", country: "FR" });
  await page.locator('[data-testid="checkout-submit"]').click();
  await invalid("postal-code").waitFor();
  assert.match(await page.locator("#address-postal-code-error").textContent(), /letters, digits/);
  assert.equal(await invalid("city").count(), 0, "an error fixed is cleared");
  await screenshot(page, "f-address-errors");

  // Fixed, the order goes abroad: international carrier, the address on the order.
  await page.locator('[data-testid="address-postal-code"]').fill("75005");
  await page.locator('[data-testid="checkout-submit"]').click();
  await page.locator('[data-testid="order-panel"]').waitFor();
  await assertText(page.locator('[data-testid="shipment-carrier"]'), "Bazaar International", SAGA_TIMEOUT);
  await screenshot(page, "f-order-abroad");
  // The browser logs the refused request itself (422) as a console error.
  assert.deepEqual(problems.filter((problem) => !/status of 422/.test(problem)), []);
});

scenario("a refused access token is refreshed once and the page carries on", "refresh", 60_000, async ({ page, problems }) => {
  await registerCustomer(page, "refresh");
  const stored = () => page.evaluate(() => JSON.parse(sessionStorage.getItem("bazaar.session") ?? "null"));
  const before = await stored();
  assert.ok(before?.access_token && before?.refresh_token);

  // The access token goes bad (as after its 15 minutes); the page is reloaded in the same tab.
  await page.evaluate(() => {
    const session = JSON.parse(sessionStorage.getItem("bazaar.session"));
    session.access_token = "expired.not-a.token";
    sessionStorage.setItem("bazaar.session", JSON.stringify(session));
  });
  const refreshes = [];
  page.on("request", (request) => {
    if (new URL(request.url()).pathname === "/api/auth/refresh") refreshes.push(request.method());
  });
  await page.reload();
  await page.locator("body[data-ready=true]").waitFor();
  await assertText(page.locator('[data-testid="account-name"]'), "Test Shopper refresh");
  await page.locator('[data-testid="cart-empty"]').waitFor();
  await page.locator('[data-testid="notifications-empty"]').waitFor();
  const after = await stored();
  assert.notEqual(after.access_token, "expired.not-a.token");
  assert.notEqual(after.refresh_token, before.refresh_token, "the refresh token was rotated");
  assert.deepEqual(refreshes, ["POST"], "one refresh for all the requests that were refused");
  assert.deepEqual(problems.filter((problem) => !/status of 401/.test(problem)), []);
});

/** How long stock set through the API may take to show on an open page: the catalog's lag
 * behind inventory, plus one of the page's 10 s availability rounds, with room for a busy
 * machine. */
const STOCK_SHOWN_TIMEOUT = 30_000;

scenario("a sold-out variant is greyed out and cannot be added, and the open page follows stock as it changes", "stock", 120_000, async ({ page, problems, navigations }) => {
  const admin = await adminToken();
  const tag = runTag();
  const brass = `LAMP-${tag}-BRASS`;
  const steel = `LAMP-${tag}-STEEL`;
  const slug = `lamp-${tag.toLowerCase()}`;
  const variants = [
    { sku: brass, name: "Brass", price_minor: 4900, currency: "EUR", stock: 0 },
    { sku: steel, name: "Steel", price_minor: 3900, currency: "EUR", stock: 2 },
  ];
  await withProduct(admin, { slug, name: `Desk Lamp ${tag}`, variants }, async () => {
    await registerCustomer(page, "stock");
    const lamp = await searchFor(page, `Desk Lamp ${tag}`, slug);
    const variant = (sku) => lamp.locator(`[data-testid="variant"][data-sku="${sku}"]`);
    const add = (sku) => variant(sku).locator('[data-testid="add-to-cart"]');

    // Brass has none left: greyed out, its button disabled. Steel has two: low.
    await lamp.locator(`[data-testid="variant"][data-sku="${brass}"][data-availability="sold_out"]`).waitFor({ timeout: STOCK_SHOWN_TIMEOUT });
    await lamp.locator(`[data-testid="variant"][data-sku="${steel}"][data-availability="low"]`).waitFor({ timeout: STOCK_SHOWN_TIMEOUT });
    assert.equal(await add(brass).isDisabled(), true);
    assert.equal(await add(brass).textContent(), "Sold out");
    assert.equal(await variant(brass).locator('[data-testid="variant-stock"]').textContent(), "Sold out");
    assert.equal(await variant(steel).locator('[data-testid="variant-stock"]').textContent(), "Only a few left");
    assert.equal(await add(steel).isEnabled(), true);
    await screenshot(page, "d-sold-out");

    // Pressing the sold-out button anyway adds nothing: after adding steel, the cart holds
    // steel alone.
    await add(brass).click({ force: true });
    await add(steel).click();
    await page.locator(`[data-testid="cart-item"][data-sku="${steel}"]`).waitFor();
    assert.equal(await page.locator('[data-testid="cart-item"]').count(), 1);
    assert.equal(await page.locator(`[data-testid="cart-item"][data-sku="${brass}"]`).count(), 0);

    // Stock changes while the page stays open: steel sells out, brass comes back. The page
    // asks again on its own, without a reload.
    const navigationsBefore = navigations.length;
    await setStock(admin, steel, 0);
    await setStock(admin, brass, 30);
    await lamp.locator(`[data-testid="variant"][data-sku="${steel}"][data-availability="sold_out"]`).waitFor({ timeout: STOCK_SHOWN_TIMEOUT });
    await lamp.locator(`[data-testid="variant"][data-sku="${brass}"][data-availability="in_stock"]`).waitFor({ timeout: STOCK_SHOWN_TIMEOUT });
    assert.equal(await add(steel).isDisabled(), true);
    assert.equal(await variant(brass).locator('[data-testid="variant-stock"]').textContent(), "In stock");
    await add(brass).click();
    await page.locator(`[data-testid="cart-item"][data-sku="${brass}"]`).waitFor();
    assert.equal(navigations.length, navigationsBefore, `the page was reloaded: ${navigations.slice(navigationsBefore)}`);
    await screenshot(page, "d-stock-changed");
  });
  assert.deepEqual(problems, []);
});

scenario("prices show in each currency's own digits, in the browser's locale (en-GB here)", "money", 90_000, async ({ page, problems }) => {
  const admin = await adminToken();
  const tag = runTag();
  const slug = `sampler-${tag.toLowerCase()}`;
  const sku = (code) => `SAMPLER-${tag}-${code}`;
  const variants = [
    { sku: sku("EUR"), name: "Euro", price_minor: 1999, currency: "EUR", stock: 5 },
    { sku: sku("JPY"), name: "Yen", price_minor: 1500, currency: "JPY", stock: 5 },
    { sku: sku("KWD"), name: "Dinar", price_minor: 1250, currency: "KWD", stock: 5 },
  ];
  await withProduct(admin, { slug, name: `Currency Sampler ${tag}`, variants }, async () => {
    await registerCustomer(page, "money");
    const sampler = await searchFor(page, `Currency Sampler ${tag}`, slug);
    const price = (code) => sampler.locator(`[data-testid="variant"][data-sku="${sku(code)}"] [data-testid="variant-price"]`).textContent();
    // Integer minor units: 1999 cents, 1500 yen (no minor unit), 1250 fils (three digits).
    assert.equal(await price("EUR"), "€19.99");
    assert.equal(await price("JPY"), "JP¥1,500");
    assert.match(await price("KWD"), /^KWD\s1\.250$/);

    // The cart adds up in minor units on the server and shows the total the same way.
    const yen = sampler.locator(`[data-testid="add-to-cart"][data-sku="${sku("JPY")}"]`);
    await sampler.locator(`[data-testid="variant"][data-sku="${sku("JPY")}"][data-availability="low"]`).waitFor({ timeout: STOCK_SHOWN_TIMEOUT });
    await yen.click();
    await page.locator(`[data-testid="cart-item"][data-sku="${sku("JPY")}"]`).waitFor();
    await yen.click();
    await assertText(page.locator('[data-testid="cart-total"]'), "JP¥3,000");
    await screenshot(page, "e-currencies");
  });
  assert.deepEqual(problems, []);
});
