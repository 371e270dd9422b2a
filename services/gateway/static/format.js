// @ts-check
// Formatting shared by the storefront's views. Money is an integer of minor units plus an
// ISO 4217 currency; Intl knows how many minor digits each currency has (JPY none, EUR two,
// KWD three), and the amount reaches it as an exact decimal string, never as a float.

/**
 * An amount in the currency's own digits, in the browser's locale unless `locale` is given.
 * @param {number | bigint} minor integer minor units
 * @param {string} currency ISO 4217 code
 * @param {string} [locale]
 */
export function money(minor, currency, locale) {
  const code = String(currency ?? "").trim().toUpperCase();
  try {
    const format = new Intl.NumberFormat(locale, { style: "currency", currency: code });
    const digits = format.resolvedOptions().maximumFractionDigits ?? 2;
    // Intl formats a decimal string exactly (the lib types predate string input).
    // @ts-ignore
    return format.format(decimal(minor, digits));
  } catch {
    // A malformed code (or an amount that is not an integer): the figures as they are.
    return `${minor} ${code}`.trim();
  }
}

/**
 * Integer minor units as a decimal string with `digits` fraction digits: 1999, 2 → "19.99".
 * Throws for anything but an integer.
 * @param {number | bigint} minor
 * @param {number} digits
 */
export function decimal(minor, digits) {
  const units = BigInt(minor);
  const sign = units < 0n ? "-" : "";
  const figures = (units < 0n ? -units : units).toString().padStart(digits + 1, "0");
  const whole = figures.slice(0, figures.length - digits);
  return digits > 0 ? `${sign}${whole}.${figures.slice(figures.length - digits)}` : `${sign}${whole}`;
}

const AVAILABILITY_LABELS = {
  in_stock: "In stock",
  low: "Only a few left",
  sold_out: "Sold out",
  unknown: "",
};

/**
 * What a shopper reads of a variant's availability (the catalog's `availability`); nothing for
 * `unknown`, where checkout decides.
 * @param {string} availability
 */
export function availabilityLabel(availability) {
  return AVAILABILITY_LABELS[availability] ?? "";
}

/** The short order reference customers see in e-mails: the last eight characters, upper case. */
export function orderRef(id) {
  const clean = String(id).replace(/-/g, "");
  return `#${clean.slice(-8).toUpperCase()}`;
}

const STATUS_LABELS = {
  pending: "Pending",
  paid: "Paid",
  shipping_scheduled: "Shipping scheduled",
  shipped: "Shipped",
  delivered: "Delivered",
  rejected: "Rejected",
  cancelled: "Cancelled",
};

/** @param {string} status */
export function statusLabel(status) {
  return STATUS_LABELS[status] ?? status;
}

/** Statuses after which nothing changes (a scheduled or shipped parcel still moves on). */
export const FINAL_STATUSES = new Set(["delivered", "rejected", "cancelled"]);

/** Statuses that end an order unsuccessfully. */
export const FAILED_STATUSES = new Set(["rejected", "cancelled"]);

/**
 * Why an order was rejected or cancelled, for a person.
 * @param {string | null | undefined} reason
 * @param {string | null | undefined} [sku]
 */
export function reasonText(reason, sku) {
  switch (reason) {
    case "payment_declined":
      return "The payment was declined by the card issuer. Nothing was charged.";
    case "out_of_stock":
      return sku ? `${sku} is out of stock. Nothing was charged.` : "An item is out of stock. Nothing was charged.";
    case "timeout":
      return "The order could not be completed in time and was released.";
    case "customer_request":
      return "You cancelled this order.";
    default:
      return reason ? `Reason: ${reason}` : "No reason was given.";
  }
}

const time = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const day = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short", year: "numeric" });

/** @param {string} iso */
export function clock(iso) {
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? "" : time.format(at);
}

/** @param {string} iso */
export function when(iso) {
  const at = new Date(iso);
  return Number.isNaN(at.getTime()) ? "" : dateTime.format(at);
}

/**
 * A calendar date (`YYYY-MM-DD`), shown as that day wherever the browser is.
 * @param {string | null | undefined} ymd
 */
export function calendarDay(ymd) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(ymd ?? "");
  if (!match) return ymd ?? "";
  return day.format(new Date(Number(match[1]), Number(match[2]) - 1, Number(match[3])));
}
