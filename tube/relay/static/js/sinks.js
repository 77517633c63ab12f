// @ts-check
/**
 * Where a received file goes, without the page holding it (design §6, "Saving large files"):
 *
 * - "stream": the service worker streams it to the download manager; a chunk counts as
 *   written once the worker's stream pulled it.
 * - "picker": File System Access, a file the person picks (needs the click that accepted).
 * - "opfs": the origin-private file system, then a download of the disk-backed file (Safari);
 *   staged by file id (staging.js), so a transfer broken beyond resume continues later.
 * - "memory": a Blob, only under MEMORY_LIMIT bytes (the page says so).
 *
 * Every sink writes chunks in order (`write` resolves once the chunk is durably written or
 * taken), `close()` finishes the file, `abort()` deletes whatever was written.
 * @module
 */

/** @typedef {import("tube/bytes.js").Bytes} Bytes */
import { b64u, randomBytes } from "tube/bytes.js";
import { hasStaging, stagingSink } from "tube/staging.js";

/** The largest file kept in memory as a Blob (iOS fails near 200 MB). */
export const MEMORY_LIMIT = 200 * 1000 * 1000;

/**
 * @typedef {object} Sink
 * @property {string} kind "stream" | "picker" | "opfs" | "memory"
 * @property {string} label how the page describes it to the person
 * @property {(chunk: Bytes) => Promise<void>} write
 * @property {() => Promise<void>} close
 * @property {() => Promise<void>} abort
 * @property {() => Promise<number>} [keep] the transfer broke beyond resume: keep what is
 *   written for a later session instead of deleting it; resolves to the chunks kept. The OPFS
 *   sink keeps its segments on disk (a reload continues them) and takes no more writes; the
 *   stream sink keeps its download open while the page lives, and a later session writes on
 */

/**
 * A file name safe to save under: no folders, no control characters, no leading dots, at most
 * 255 UTF-8 bytes (design §4.5: the sender chooses the name).
 * @param {string} name
 * @returns {string}
 */
export function sanitiseName(name) {
  let clean = name
    .replace(/[\u0000-\u001f\u007f<>:"/\\|?*]/g, "_")
    .replace(/^[.\s]+/, "")
    .trim();
  const encoder = new TextEncoder();
  while (encoder.encode(clean).length > 255) clean = [...clean].slice(0, -1).join("");
  return clean || "download";
}

/**
 * The service worker's registration, if the page has one that is active.
 * @returns {Promise<ServiceWorker | null>}
 */
export async function streamWorker() {
  if (!("serviceWorker" in navigator)) return null;
  try {
    const registration = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
    const ready = await Promise.race([
      navigator.serviceWorker.ready,
      new Promise((resolve) => setTimeout(resolve, 3000, null)),
    ]);
    return ready ? registration.active : null;
  } catch {
    return null;
  }
}

/**
 * The stream download through the service worker.
 * @param {ServiceWorker} worker
 * @param {string} name
 * @param {number} size
 * @returns {Promise<Sink>}
 */
export async function streamSink(worker, name, size) {
  const id = b64u(randomBytes(16));
  const channel = new MessageChannel();
  /** @type {(() => void)[]} resolvers of writes, in order, waiting for "pulled" */
  const pending = [];
  /** @type {(() => void) | null} */
  let onFinished = null;
  let cancelled = false;
  let pulled = 0; // chunks the download took
  const ready = new Promise((resolve) => {
    channel.port1.onmessage = (event) => {
      const type = event.data.type;
      if (type === "ready") resolve(undefined);
      else if (type === "pulled") {
        pulled += 1;
        pending.shift()?.();
      }
      else if (type === "finished") onFinished?.();
      else if (type === "cancelled") cancelled = true;
    };
  });
  worker.postMessage({ type: "download", id, name: sanitiseName(name), size }, [channel.port2]);
  await ready;
  const frame = document.createElement("iframe");
  frame.hidden = true;
  frame.title = "download";
  frame.src = `/dl/${id}`;
  document.body.append(frame);
  // Keeps the worker alive while the transfer waits (Firefox stops idle workers after ~30 s).
  const ping = setInterval(() => channel.port1.postMessage({ type: "ping" }), 10000);
  const end = () => {
    clearInterval(ping);
    setTimeout(() => frame.remove(), 1000);
  };
  return {
    kind: "stream",
    label: "straight to your downloads",
    write(chunk) {
      if (cancelled) return Promise.reject(new Error("the download was cancelled in the browser"));
      const written = new Promise((resolve) => pending.push(() => resolve(undefined)));
      // Transfer the buffer: after this the chunk is the worker's (and its view is empty).
      const buffer = chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength ? chunk.buffer : chunk.slice().buffer;
      channel.port1.postMessage({ type: "chunk", chunk: buffer }, [buffer]);
      return /** @type {Promise<void>} */ (written);
    },
    async close() {
      const finished = new Promise((resolve) => {
        onFinished = () => resolve(undefined);
      });
      channel.port1.postMessage({ type: "close" });
      await finished;
      end();
    },
    async abort() {
      channel.port1.postMessage({ type: "abort" });
      end();
    },
    // The download stays open while the page does: a new session may go on writing to it.
    keep: async () => (cancelled ? 0 : pulled),
  };
}

/**
 * A file the person picks (File System Access). Call from the click that accepted the offer.
 * @param {string} name
 * @returns {Promise<Sink>}
 */
export async function pickerSink(name) {
  const picker = /** @type {any} */ (window).showSaveFilePicker;
  /** @type {any} */
  const handle = await picker({ suggestedName: sanitiseName(name) });
  const writable = await handle.createWritable();
  return {
    kind: "picker",
    label: "to the file you picked",
    write: (chunk) => writable.write(chunk),
    close: () => writable.close(),
    async abort() {
      await writable.abort().catch(() => {});
      // Chromium can delete the picked file itself; elsewhere it is left empty.
      if (handle.remove) await handle.remove().catch(() => {});
    },
  };
}

/**
 * In memory, for small files only.
 * @param {string} name
 * @returns {Sink}
 */
export function memorySink(name) {
  /** @type {Bytes[]} */
  let parts = [];
  return {
    kind: "memory",
    label: "in this tab's memory, then your downloads (files under 200 MB)",
    async write(chunk) {
      parts.push(chunk);
    },
    async close() {
      saveBlob(new Blob(parts), name);
      parts = [];
    },
    async abort() {
      parts = [];
    },
  };
}

/**
 * Start a download of a Blob or File under a sanitised name.
 * @param {Blob} blob
 * @param {string} name
 */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(new Blob([blob], { type: "application/octet-stream" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = sanitiseName(name);
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

/**
 * The best sink this browser has for `offer`; `forced` (the page's `?sink=`) picks one for
 * tests. Call from the click that accepted (the picker needs it).
 * @param {import("tube/staging.js").StagedFile} offer
 * @param {ServiceWorker | null} worker
 * @param {string | null} forced
 * @returns {Promise<Sink>}
 */
export async function chooseSink(offer, worker, forced) {
  const { name, size } = offer;
  if ((forced === null || forced === "stream") && worker) return streamSink(worker, name, size);
  if ((forced === null || forced === "picker") && "showSaveFilePicker" in window) {
    try {
      return await pickerSink(name);
    } catch (error) {
      // The person closed the picker: that is a decision, not a reason to save elsewhere.
      if (error instanceof DOMException && error.name === "AbortError" && forced === null) throw error;
    }
  }
  if ((forced === null || forced === "opfs") && hasStaging()) {
    try {
      return await stagingSink(offer, 0, saveBlob);
    } catch {
      // No createWritable() in this browser's OPFS: fall through to memory.
    }
  }
  if (size > MEMORY_LIMIT) {
    throw new Error(
      "This browser cannot save files over 200 MB from a web page. Use a recent Chrome or Firefox, or the command line: python -m tube receive CODE.",
    );
  }
  return memorySink(name);
}
