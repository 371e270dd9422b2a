// Unit tests of the storefront's own modules that need no browser: the event-stream parser,
// money formatting and availability labels. The modules are plain browser ES modules without imports, loaded as they
// are served.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";

async function load(name) {
  const url = new URL(`../../services/gateway/static/${name}`, import.meta.url);
  const source = await readFile(url, "utf8");
  return import(`data:text/javascript;base64,${Buffer.from(source).toString("base64")}`);
}

const { createSseParser, readEventStream } = await load("sse.js");
const { availabilityLabel, decimal, money, orderRef, reasonText } = await load("format.js");

function parse(chunks) {
  const events = [];
  const retries = [];
  const parser = createSseParser((event) => events.push(event), (ms) => retries.push(ms));
  for (const chunk of chunks) parser.push(chunk);
  parser.end();
  return { events, retries };
}

test("frames as the order service writes them", () => {
  const frame = (id, status) => `event: status\nid: ${id}\ndata: {"status":"${status}","reason":null}\n\n`;
  const { events } = parse([frame(1, "pending") + frame(2, "paid"), frame(3, "shipping_scheduled")]);
  assert.deepEqual(
    events.map((event) => [event.type, event.id, JSON.parse(event.data).status]),
    [["status", "1", "pending"], ["status", "2", "paid"], ["status", "3", "shipping_scheduled"]],
  );
});

test("a frame split anywhere, even between CR and LF, parses the same", () => {
  const text = "event: status\r\nid: 7\r\ndata: a\r\ndata: b\r\n\r\n:comment\rdata:c\r\r";
  const whole = parse([text]).events;
  assert.deepEqual(whole, [
    { type: "status", data: "a\nb", id: "7" },
    { type: "message", data: "c", id: "7" },
  ]);
  for (let cut = 1; cut < text.length; cut += 1) {
    assert.deepEqual(parse([text.slice(0, cut), text.slice(cut)]).events, whole, `cut at ${cut}`);
  }
  assert.deepEqual(parse([...text]).events, whole, "one character at a time");
});

test("comments, unknown fields, events without data and an unfinished event are not dispatched", () => {
  const { events, retries } = parse(["\uFEFF: hello\nfoo: bar\nevent: x\n\nretry: 1500\nretry: soon\ndata: last"]);
  assert.deepEqual(events, []);
  assert.deepEqual(retries, [1500]);
});

test("a field without a colon, and a value without the space", () => {
  const { events } = parse(["data\ndata:x\n\n"]);
  assert.deepEqual(events, [{ type: "message", data: "\nx", id: "" }]);
});

test("readEventStream reads a fetch Response body to its end", async () => {
  const encoder = new TextEncoder();
  const body = new ReadableStream({
    start(controller) {
      // A multi-byte character split across chunks must survive decoding.
      const bytes = encoder.encode("data: caf\u00e9\n\n");
      controller.enqueue(bytes.slice(0, 9));
      controller.enqueue(bytes.slice(9));
      controller.close();
    },
  });
  const events = [];
  await readEventStream(new Response(body), (event) => events.push(event));
  assert.deepEqual(events.map((event) => event.data), ["caf\u00e9"]);
});

test("money is minor units in the currency's own digits", () => {
  assert.equal(money(1999, "EUR", "en-GB"), "€19.99");
  assert.equal(money(1250, "EUR ", "de-DE"), "12,50\u00a0€");
  assert.equal(money(500, "JPY", "en-US"), "¥500");
  assert.equal(money(1000, "KWD", "en-US"), "KWD\u00a01.000");
  assert.equal(money(0, "usd", "en-US"), "$0.00");
  assert.equal(money(150000, "JPY", "de-DE"), "150.000\u00a0¥");
  assert.equal(money(-505, "EUR", "en-GB"), "-€5.05");
});

test("money never goes through a float: amounts beyond 2^53 minor units stay exact", () => {
  assert.equal(money(123456789012345678901n, "EUR", "en-GB"), "€1,234,567,890,123,456,789.01");
  assert.equal(money(9007199254740993n, "KWD", "en-US"), "KWD\u00a09,007,199,254,740.993");
  assert.equal(decimal(5, 2), "0.05");
  assert.equal(decimal(-5, 3), "-0.005");
  assert.equal(decimal(1500, 0), "1500");
  assert.throws(() => decimal(19.5, 2), "minor units are integers");
  assert.equal(money(100, "E", "en-GB"), "100 E", "a malformed code shows the figures as they are");
});

test("availability reads as a shopper would say it", () => {
  assert.equal(availabilityLabel("in_stock"), "In stock");
  assert.equal(availabilityLabel("low"), "Only a few left");
  assert.equal(availabilityLabel("sold_out"), "Sold out");
  assert.equal(availabilityLabel("unknown"), "");
  assert.equal(availabilityLabel("something_new"), "");
});

test("order references and reasons read as the e-mails do", () => {
  assert.equal(orderRef("01a21636-3628-7abc-9def-0123a3f4d9e8"), "#A3F4D9E8");
  assert.match(reasonText("payment_declined"), /declined/);
  assert.match(reasonText("out_of_stock", "TOTE-NAT"), /TOTE-NAT/);
  assert.match(reasonText("something_new"), /something_new/);
});
