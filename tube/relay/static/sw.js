// @ts-check
/**
 * Tube's service worker: streams a received file to the browser's download manager, so the
 * page never holds the file (design §6, "Saving large files").
 *
 * The page posts {type: "download", id, name, size} with a MessagePort; then opens /dl/<id>
 * in a hidden iframe. We answer that request with a ReadableStream (high-water mark 0: we hold
 * only what the page sent and the browser has not pulled yet). Each chunk the page posts waits
 * in a queue until pull() takes it; then we tell the page {type: "pulled"}, and only then does
 * the page acknowledge the chunk to the sender (the credit window bounds the queue).
 *
 * The response is always application/octet-stream, an attachment under the sanitised name,
 * with nosniff and CSP sandbox: a sender chooses the name and type, and must never get to run
 * script on the relay's origin (design §4.5).
 */

const worker = /** @type {ServiceWorkerGlobalScope} */ (/** @type {unknown} */ (self));

/**
 * @typedef {object} Download
 * @property {MessagePort} port
 * @property {string} name
 * @property {number} size
 * @property {Uint8Array[]} queue chunks posted, not yet pulled
 * @property {boolean} closed the page sent the last chunk
 * @property {(() => void) | null} wake pull() waiting for a chunk
 * @property {ReadableStreamDefaultController<Uint8Array> | null} controller
 */

/** @type {Map<string, Download>} */
const downloads = new Map();

worker.addEventListener("install", () => {
  // A new version takes over at once: the worker keeps no state between downloads.
  void worker.skipWaiting();
});

worker.addEventListener("activate", (event) => {
  event.waitUntil(worker.clients.claim());
});

worker.addEventListener("message", (event) => {
  const data = event.data;
  if (!data || data.type !== "download" || !event.ports[0]) return;
  /** @type {Download} */
  const download = {
    port: event.ports[0],
    name: String(data.name),
    size: Number(data.size),
    queue: [],
    closed: false,
    wake: null,
    controller: null,
  };
  downloads.set(String(data.id), download);
  download.port.onmessage = (message) => {
    const m = message.data;
    if (m.type === "chunk") {
      download.queue.push(new Uint8Array(m.chunk));
    } else if (m.type === "close") {
      download.closed = true;
    } else if (m.type === "abort") {
      // Erroring the stream makes the browser fail the download and delete its partial file.
      download.controller?.error(new Error("transfer failed"));
      downloads.delete(String(data.id));
    }
    // "ping" (every 10 s) only keeps an idle worker alive (Firefox stops it after ~30 s).
    const wake = download.wake;
    download.wake = null;
    if (wake) wake();
  };
  download.port.postMessage({ type: "ready" });
});

/**
 * `Content-Disposition` for a name: RFC 6266 / 8187 `filename*` (UTF-8, percent-encoded),
 * with an ASCII fallback.
 * @param {string} name
 * @returns {string}
 */
function disposition(name) {
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, "_");
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}

worker.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (url.origin !== location.origin || !url.pathname.startsWith("/dl/")) return;
  const id = url.pathname.slice(4);
  const download = downloads.get(id);
  if (!download) {
    event.respondWith(new Response("no such download\n", { status: 404 }));
    return;
  }
  const stream = new ReadableStream(
    {
      start(controller) {
        download.controller = controller;
      },
      async pull(controller) {
        while (!download.queue.length && !download.closed) {
          await new Promise((resolve) => {
            download.wake = () => resolve(undefined);
          });
        }
        const chunk = download.queue.shift();
        if (chunk) {
          controller.enqueue(chunk);
          download.port.postMessage({ type: "pulled" });
        } else {
          controller.close();
          downloads.delete(id);
          download.port.postMessage({ type: "finished" });
        }
      },
      cancel() {
        // The person cancelled the download in the browser.
        download.port.postMessage({ type: "cancelled" });
        downloads.delete(id);
      },
    },
    { highWaterMark: 0 },
  );
  /** @type {Record<string, string>} */
  const headers = {
    "Content-Type": "application/octet-stream",
    "Content-Disposition": disposition(download.name),
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox",
  };
  if (download.size >= 0) headers["Content-Length"] = String(download.size);
  event.respondWith(new Response(stream, { headers }));
});
