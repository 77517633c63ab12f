// Interop client for Tube's tests, built on Node's `ws` package.
//
// Usage: node ws_client.mjs URL SCENARIO [SIZES]
//   SCENARIO  "client-close": exchange, ping, then the client starts the closing handshake;
//             "server-close": exchange, ping, then ask the server to start it and wait.
//   SIZES     comma-separated message sizes in bytes (default 0,125,126,65535,65536,4194304).
//
// Environment: TUBE_DEFLATE=on offers permessage-deflate (perMessageDeflate: true),
// TUBE_DEFLATE=no-takeover offers it with both no_context_takeover parameters; unset or "off":
// no compression.
//
// It talks to an echo server: every text or binary message comes back unchanged. The text
// message "tube-test:close CODE REASON" asks the server to call initiate_close(CODE, REASON).
//
// It reports on stdout, one JSON object per line:
//   {"event": "open", "protocol": ..., "extensions": ...}
//   {"event": "pong", "payload": HEX}
//   {"event": "echo", "kind": "text"|"binary", "size": N, "sha256": HEX, "ok": true|false}
//   {"event": "close", "code": N, "reason": STR}
//   {"event": "error", "message": STR}
//   {"event": "done"}
// and exits 0 only when every step succeeded.

import { createHash, randomBytes, randomInt } from "node:crypto";
import WebSocket from "ws";

const DEFAULT_SIZES = [0, 125, 126, 65535, 65536, 4 * 1024 * 1024];
const WATCHDOG_MS = 20000;
const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ";

function report(object) {
  process.stdout.write(`${JSON.stringify(object)}\n`);
}

function fail(message) {
  report({ event: "error", message });
  process.exit(1);
}

function sha256(buffer) {
  return createHash("sha256").update(buffer).digest("hex");
}

// A random ASCII string of exactly `size` bytes (ASCII: one byte per character).
function randomAscii(size) {
  const bytes = randomBytes(size);
  let text = "";
  for (let i = 0; i < size; i++) {
    text += ALPHABET[bytes[i] % ALPHABET.length];
  }
  return text;
}

// Text with 1-, 2-, 3- and 4-byte UTF-8 sequences, longer than 65536 bytes.
function multiByteText() {
  const unit = "héllo wörld ✓ €uro 🚀 ";
  let text = "";
  while (Buffer.byteLength(text) <= 70000) {
    text += unit + randomInt(1000000).toString();
  }
  return text;
}

const [url, scenario, sizesArg] = process.argv.slice(2);
if (!url || !["client-close", "server-close"].includes(scenario)) {
  fail("usage: node ws_client.mjs URL client-close|server-close [SIZES]");
}
const sizes = sizesArg ? sizesArg.split(",").map(Number) : DEFAULT_SIZES;

const watchdog = setTimeout(() => fail(`no result within ${WATCHDOG_MS} ms`), WATCHDOG_MS);

// threshold 0: compress every message, so small ones are exercised too.
const DEFLATE = {
  on: { threshold: 0 },
  "no-takeover": { threshold: 0, clientNoContextTakeover: true, serverNoContextTakeover: true },
}[process.env.TUBE_DEFLATE ?? "off"] ?? false;
const ws = new WebSocket(url, { perMessageDeflate: DEFLATE });

// Messages and pongs arrive as events; hand them to the sequential script through queues.
const messages = [];
const pongs = [];
let wake = null;
let closed = null;

function notify() {
  if (wake) {
    const resolve = wake;
    wake = null;
    resolve();
  }
}

async function next(queue, what) {
  while (queue.length === 0) {
    if (closed) {
      fail(`connection closed (${closed.code}) while waiting for ${what}`);
    }
    await new Promise((resolve) => {
      wake = resolve;
    });
  }
  return queue.shift();
}

ws.on("message", (data, isBinary) => {
  messages.push({ data, isBinary });
  notify();
});
ws.on("pong", (payload) => {
  pongs.push(payload);
  notify();
});
ws.on("error", (error) => fail(`ws error: ${error.message}`));

const closeEvent = new Promise((resolve) => {
  ws.on("close", (code, reason) => {
    closed = { code, reason: reason.toString("utf8") };
    resolve(closed);
    notify();
  });
});

async function ping(payload) {
  ws.ping(payload);
  const pong = await next(pongs, "a pong");
  if (!pong.equals(payload)) {
    fail(`pong payload ${pong.toString("hex")} != ping payload ${payload.toString("hex")}`);
  }
  report({ event: "pong", payload: pong.toString("hex") });
}

async function echoBinary(size) {
  const payload = randomBytes(size);
  ws.send(payload, { binary: true });
  const { data, isBinary } = await next(messages, `the echo of ${size} binary bytes`);
  const ok = isBinary && Buffer.isBuffer(data) && data.equals(payload);
  report({ event: "echo", kind: "binary", size, sha256: sha256(payload), ok });
  if (!ok) fail(`binary echo of ${size} bytes differs (got ${data.length} bytes)`);
}

async function echoText(text) {
  const size = Buffer.byteLength(text);
  ws.send(text, { binary: false });
  const { data, isBinary } = await next(messages, `the echo of ${size} text bytes`);
  const ok = !isBinary && data.toString("utf8") === text;
  report({ event: "echo", kind: "text", size, sha256: sha256(Buffer.from(text)), ok });
  if (!ok) fail(`text echo of ${size} bytes differs (got ${data.length} bytes)`);
}

ws.on("open", async () => {
  report({ event: "open", protocol: ws.protocol, extensions: ws.extensions });
  await ping(Buffer.from("ping-from-node"));
  for (const size of sizes) {
    await echoText(randomAscii(size));
    await echoBinary(size);
  }
  await echoText(multiByteText());
  await ping(Buffer.alloc(0));

  if (scenario === "client-close") {
    ws.close(1000, "client bye");
  } else {
    ws.send("tube-test:close 1000 server bye");
  }
  const { code, reason } = await closeEvent;
  report({ event: "close", code, reason });
  clearTimeout(watchdog);
  report({ event: "done" });
});
