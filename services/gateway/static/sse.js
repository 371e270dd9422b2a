// @ts-check
// Server-Sent Events over fetch(). EventSource cannot send an Authorization header, so the
// storefront reads `text/event-stream` itself: this module parses the frames (per the HTML
// standard's event stream interpretation) and reads a fetch() Response body into them.

/**
 * One dispatched event.
 * @typedef {{ type: string, data: string, id: string }} SseEvent
 */

/**
 * An incremental parser: push() text as it arrives, in chunks of any size; `onEvent` is called
 * for each complete event. Lines end with CRLF, LF or CR (a CR at the end of a chunk waits for
 * the next one, in case an LF follows). Comments (`:`) and unknown fields are ignored, as are
 * events without data; `retry:` is reported through `onRetry`.
 * @param {(event: SseEvent) => void} onEvent
 * @param {(milliseconds: number) => void} [onRetry]
 */
export function createSseParser(onEvent, onRetry) {
  let buffer = "";
  let data = [];
  let type = "";
  let lastEventId = "";
  let first = true;

  /** @param {string} line */
  function line(line) {
    if (line === "") {
      if (data.length > 0) {
        onEvent({ type: type || "message", data: data.join("\n"), id: lastEventId });
      }
      data = [];
      type = "";
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "data":
        data.push(value);
        break;
      case "event":
        type = value;
        break;
      case "id":
        if (!value.includes("\0")) lastEventId = value;
        break;
      case "retry":
        if (/^\d+$/.test(value) && onRetry) onRetry(Number(value));
        break;
      default:
        break;
    }
  }

  return {
    /** @param {string} text */
    push(text) {
      buffer += text;
      if (first && buffer.length > 0) {
        // A byte order mark may start the stream.
        if (buffer.charCodeAt(0) === 0xfeff) buffer = buffer.slice(1);
        first = false;
      }
      let start = 0;
      for (let i = 0; i < buffer.length; i += 1) {
        const c = buffer[i];
        if (c === "\n") {
          line(buffer.slice(start, i));
          start = i + 1;
        } else if (c === "\r") {
          if (i + 1 === buffer.length) break; // wait: an LF may follow in the next chunk
          line(buffer.slice(start, i));
          if (buffer[i + 1] === "\n") i += 1;
          start = i + 1;
        }
      }
      buffer = buffer.slice(start);
    },
    /** The stream ended: a trailing CR ends its line; an event without its blank line is dropped. */
    end() {
      if (buffer.endsWith("\r")) line(buffer.slice(0, -1));
      buffer = "";
      data = [];
      type = "";
    },
    /** The id of the last event seen, for Last-Event-ID. */
    get lastEventId() {
      return lastEventId;
    },
  };
}

/**
 * Reads a fetch() response body as an event stream until it ends or `signal` aborts.
 * @param {Response} response
 * @param {(event: SseEvent) => void} onEvent
 * @param {AbortSignal} [signal]
 * @returns {Promise<void>} resolves when the server ends the stream
 */
export async function readEventStream(response, onEvent, signal) {
  if (!response.body) throw new Error("the event stream has no body");
  const parser = createSseParser(onEvent);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const cancel = () => {
    reader.cancel().catch(() => {});
  };
  signal?.addEventListener("abort", cancel, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
    }
    parser.end();
  } finally {
    signal?.removeEventListener("abort", cancel);
    reader.releaseLock();
  }
}
