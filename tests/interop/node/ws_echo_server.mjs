// Interop echo server for Tube's client tests, built on Node's `ws` package.
//
// Usage: node ws_echo_server.mjs
//
// Environment: TUBE_DEFLATE=on accepts permessage-deflate (perMessageDeflate: true, every
// message compressed), TUBE_DEFLATE=no-takeover also imposes both no_context_takeover
// parameters; unset or "off": no compression.
//
// Listens on 127.0.0.1 on an ephemeral port and prints {"port": N} on stdout once ready. It
// stops when its standard input ends (the test closes the pipe), or after a watchdog delay, so
// it never outlives the test that started it.
//
// Every text or binary message comes back unchanged, except two test commands (text):
//   "tube-test:close CODE REASON"  the server starts the closing handshake with CODE and REASON;
//   "tube-test:ping HEX"           the server sends a ping with the payload HEX, and once the
//                                  matching pong arrives, answers "tube-test:pong HEX".
// Each ended connection is reported on stdout as
//   {"event": "closed", "code": N, "reason": STR}.

import { WebSocketServer } from "ws";

const WATCHDOG_MS = 60000;

function report(object) {
  process.stdout.write(`${JSON.stringify(object)}\n`);
}

const server = new WebSocketServer({
  host: "127.0.0.1",
  port: 0,
  maxPayload: 64 * 1024 * 1024,
  perMessageDeflate:
    {
      on: { threshold: 0 },
      "no-takeover": { threshold: 0, clientNoContextTakeover: true, serverNoContextTakeover: true },
    }[process.env.TUBE_DEFLATE ?? "off"] ?? false,
});

server.on("connection", (socket, request) => {
  const waitingPongs = new Set();
  socket.on("message", (data, isBinary) => {
    if (!isBinary) {
      const text = data.toString("utf8");
      if (text.startsWith("tube-test:close ")) {
        const [code, ...reason] = text.slice("tube-test:close ".length).split(" ");
        socket.close(Number(code), reason.join(" "));
        return;
      }
      if (text.startsWith("tube-test:ping ")) {
        const hex = text.slice("tube-test:ping ".length);
        waitingPongs.add(hex);
        socket.ping(Buffer.from(hex, "hex"));
        return;
      }
    }
    socket.send(data, { binary: isBinary });
  });
  socket.on("pong", (payload) => {
    const hex = payload.toString("hex");
    if (waitingPongs.delete(hex)) {
      socket.send(`tube-test:pong ${hex}`);
    }
  });
  socket.on("close", (code, reason) => {
    report({
      event: "closed",
      code,
      reason: reason.toString("utf8"),
      path: request.url,
      extensions: request.headers["sec-websocket-extensions"] ?? null,
    });
  });
  socket.on("error", (error) => {
    report({ event: "error", message: String(error) });
  });
});

server.on("listening", () => {
  report({ port: server.address().port });
});

function stop() {
  for (const client of server.clients) {
    client.terminate();
  }
  server.close(() => process.exit(0));
}

process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
setTimeout(stop, WATCHDOG_MS).unref();
