// @ts-check
/**
 * The receiver's resume store (design §5.9, "Across a relay restart or page reload"): the OPFS
 * sink stages the file in the origin-private file system, keyed by its file id, so that a
 * transfer broken beyond resume (a relay restart, a reload, a closed tab) continues with a new
 * code from the chunks already written.
 *
 * Layout: `tube-partial/<file id, base64url>/` holds `meta.json` (the file id, name, size and
 * the count of chunks durably written) and one file per segment of SEGMENT_CHUNKS chunks
 * (`seg-<n>`). A writable's data reaches its file only when the writable closes (OPFS writes go
 * to a swap file until then), so each segment is closed when full and only then counted in
 * `meta.json`: a break loses at most the segment being written, and what the count says is
 * always on disk. The chunks were authenticated (AES-GCM) before they were written; the next
 * session trusts that local prefix and does not verify it again (the design's rule).
 *
 * A finished file is exported as a download of the segments' disk-backed Files, marked
 * complete, and removed a minute later (or at the next page load). Nothing here is shown as a
 * file before the last chunk is written and the sender's whole stream was checked.
 * @module
 */

/** @typedef {import("tube/bytes.js").Bytes} Bytes */
/** @typedef {import("tube/sinks.js").Sink} Sink */
import { b64u } from "tube/bytes.js";
import { CHUNK_SIZE, chunkCount } from "tube/framing.js";

/** Chunks per segment file: 32 (8 MiB), so a break re-sends at most 8 MiB written before it. */
export const SEGMENT_CHUNKS = 32;
const FOLDER = "tube-partial";
const META = "meta.json";
// A finished file's folder is removed this long after its download started.
const KEEP_FINISHED_MS = 60000;

/**
 * A partial file this browser keeps.
 * @typedef {object} Kept
 * @property {string} fileId base64url
 * @property {string} name as the sender offered it
 * @property {number} size bytes
 * @property {number} chunks chunks durably written (a multiple of SEGMENT_CHUNKS)
 */

/**
 * @typedef {object} StagedFile what the sink is told about the offer
 * @property {Bytes} fileId
 * @property {string} name
 * @property {number} size
 */

/** Whether this browser has the origin-private file system. */
export function hasStaging() {
  return typeof navigator.storage?.getDirectory === "function";
}

/** @returns {Promise<FileSystemDirectoryHandle>} */
async function folder() {
  const root = await navigator.storage.getDirectory();
  return root.getDirectoryHandle(FOLDER, { create: true });
}

/**
 * @param {number} index
 * @returns {string}
 */
function segmentName(index) {
  return `seg-${String(index).padStart(6, "0")}`;
}

/**
 * @param {FileSystemFileHandle} handle
 * @param {object} value
 */
async function writeJson(handle, value) {
  const writable = await handle.createWritable();
  await writable.write(JSON.stringify(value));
  await writable.close();
}

/**
 * A folder's partial file, checked against what is on disk: the count is cut back to the
 * segments that are there whole. Null if it is not a partial (finished, or unreadable).
 * @param {FileSystemDirectoryHandle} dir
 * @returns {Promise<Kept | null>}
 */
async function readKept(dir) {
  let meta;
  try {
    meta = JSON.parse(await (await (await dir.getFileHandle(META)).getFile()).text());
  } catch {
    return null;
  }
  if (meta?.v !== 1 || meta.complete || meta.file_id !== dir.name) return null;
  const { name, size } = meta;
  if (typeof name !== "string" || !Number.isSafeInteger(size) || size < 0) return null;
  const total = chunkCount(size);
  let chunks = 0;
  while (chunks + SEGMENT_CHUNKS < total && chunks < meta.chunks) {
    try {
      const file = await (await dir.getFileHandle(segmentName(chunks / SEGMENT_CHUNKS))).getFile();
      if (file.size !== SEGMENT_CHUNKS * CHUNK_SIZE) break;
    } catch {
      break;
    }
    chunks += SEGMENT_CHUNKS;
  }
  return { fileId: dir.name, name, size, chunks };
}

/**
 * The partial files this browser keeps (those with at least one segment), oldest state
 * first. Finished files left behind (the tab closed within a minute) are removed.
 * @returns {Promise<Kept[]>}
 */
export async function keptFiles() {
  if (!hasStaging()) return [];
  /** @type {Kept[]} */
  const kept = [];
  try {
    const top = await folder();
    for await (const entry of /** @type {any} */ (top).values()) {
      if (entry.kind !== "directory") continue;
      const found = await readKept(entry);
      if (found && found.chunks > 0) kept.push(found);
      else if (!found || found.chunks === 0) await top.removeEntry(entry.name, { recursive: true }).catch(() => {});
    }
  } catch {
    return [];
  }
  return kept;
}

/**
 * The kept partial of this offer, if any: same file id and size.
 * @param {Bytes} fileId
 * @param {number} size
 * @returns {Promise<Kept | null>}
 */
export async function findKept(fileId, size) {
  const id = b64u(fileId);
  for (const kept of await keptFiles()) {
    if (kept.fileId === id && kept.size === size) return kept;
  }
  return null;
}

/**
 * Delete a kept partial.
 * @param {string} fileId base64url
 */
export async function discardKept(fileId) {
  const top = await folder();
  await top.removeEntry(fileId, { recursive: true }).catch((error) => {
    // Gone already is the goal; anything else leaves bytes behind: say so.
    if (!(error instanceof DOMException && error.name === "NotFoundError")) {
      console.warn(`tube: could not delete the partial file ${fileId}:`, error);
    }
  });
}

/**
 * The OPFS sink: stages the file by file id, from chunk `resumeFrom` (0, or a kept
 * partial's `chunks`). `keep()` (a break beyond resume) leaves the written segments for a
 * later session; `abort()` deletes them; `close()` exports the whole file as a download.
 * @param {StagedFile} offer
 * @param {number} resumeFrom
 * @param {(blob: Blob, name: string) => void} save starts the download
 * @returns {Promise<Sink>}
 */
export async function stagingSink(offer, resumeFrom, save) {
  const id = b64u(offer.fileId);
  const total = chunkCount(offer.size);
  if (resumeFrom % SEGMENT_CHUNKS !== 0 && resumeFrom !== total) throw new RangeError("resume inside a segment");
  const top = await folder();
  if (resumeFrom === 0) await top.removeEntry(id, { recursive: true }).catch(() => {});
  const dir = await top.getDirectoryHandle(id, { create: true });
  const metaHandle = await dir.getFileHandle(META, { create: true });
  const meta = { v: 1, file_id: id, name: offer.name, size: offer.size, chunks: resumeFrom };
  await writeJson(metaHandle, meta);
  let next = resumeFrom; // the next chunk's index
  /** @type {FileSystemWritableFileStream | null} */
  let writable = null;
  let stopped = false; // keep() or abort() was called: no more writes
  // The write in progress, settled or not. A failure can call abort() while a write awaits
  // createWritable(): dropping must wait for it, or that write opens a segment after the
  // drop, and its open file (Chromium's .crswap) keeps the folder from being removed.
  /** @type {Promise<unknown>} */
  let inFlight = Promise.resolve();

  /** @param {Bytes} chunk */
  const writeNow = async (chunk) => {
    if (stopped) throw new Error("the staged file was closed");
    if (!writable) {
      const segment = await dir.getFileHandle(segmentName(next / SEGMENT_CHUNKS), { create: true });
      writable = await segment.createWritable();
    }
    await writable.write(chunk);
    next += 1;
    if (next % SEGMENT_CHUNKS === 0 || next === total) {
      // Closing commits the segment; only then does the count include it.
      const open = writable;
      writable = null;
      await open.close();
      meta.chunks = next;
      await writeJson(metaHandle, meta);
    }
  };
  const drop = async () => {
    stopped = true;
    await inFlight;
    const open = writable;
    writable = null;
    if (open) await open.abort().catch(() => {});
  };
  return {
    kind: "opfs",
    label: "to the browser's storage, then your downloads",
    write(chunk) {
      const run = inFlight.then(() => writeNow(chunk));
      inFlight = run.catch(() => {});
      return run;
    },
    async close() {
      /** @type {File[]} */
      const parts = [];
      for (let index = 0; index * SEGMENT_CHUNKS < total; index++) {
        parts.push(await (await dir.getFileHandle(segmentName(index))).getFile());
      }
      await writeJson(metaHandle, { ...meta, complete: Date.now() });
      save(new Blob(parts), offer.name);
      setTimeout(() => void discardKept(id), KEEP_FINISHED_MS);
    },
    async abort() {
      await drop();
      await discardKept(id);
    },
    async keep() {
      await drop();
      if (meta.chunks === 0) await discardKept(id);
      // The segment in progress: its file exists, empty (its writes were dropped with it).
      else await dir.removeEntry(segmentName(meta.chunks / SEGMENT_CHUNKS)).catch(() => {});
      return meta.chunks;
    },
  };
}
