// @ts-check
/**
 * The page: wires the DOM to the transfer. Sender: pick or drop a file, get a code and a link
 * (either works: sharing.js waits on both), follow the transfer until the receiver confirmed
 * it. Receiver: type the code (with word completion) or open the link, see the offer, accept,
 * follow the transfer to the saved file.
 * Everything a person reads is set with textContent (a sender chooses the file name).
 * @module
 */

import { BadCode, WordList, newSecret, parseCode } from "tube/codes.js";
import { hasX25519 } from "tube/cpace.js";
import { qrSvg } from "tube/qr.js";
import { MEMORY_LIMIT, chooseSink, saveBlob, streamWorker } from "tube/sinks.js";
import { AllocationError, Sharing, makeForms } from "tube/sharing.js";
import { discardKept, findKept, keptFiles, stagingSink } from "tube/staging.js";
import { b64u } from "tube/bytes.js";
import { CHUNK_SIZE } from "tube/framing.js";
import { Session, formatDuration } from "tube/transfer.js";

/** @typedef {import("tube/transfer.js").Update} Update */
/** @typedef {import("tube/staging.js").Kept} Kept */

/**
 * @template {HTMLElement} T
 * @param {string} id
 * @returns {T}
 */
function $(id) {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} missing`);
  return /** @type {T} */ (element);
}

const app = $("app");
const params = new URLSearchParams(location.search);
// ?relay=wss://host lets a copy of this folder served elsewhere use another relay.
const relayParam = params.get("relay");
const relayWs = relayParam
  ? relayParam.replace(/\/+$/, "")
  : `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}`;
const relayHttp = relayWs.replace(/^ws/, "http");
// ?sink=stream|picker|opfs|memory forces one way of saving (tests, and people whose browser
// misbehaves with the default).
const forcedSink = params.get("sink");

/** @type {Session | null} the receiver's transfer */
let session = null;
/** @type {Sharing | null} the sender's code and link, then its transfer */
let sharing = null;
/** @type {WordList | null} */
let words = null;
/** @type {Promise<ServiceWorker | null>} */
let worker = Promise.resolve(null);
/**
 * R: a download still open after its transfer broke (the stream sink's keep): the same file
 * offered again with a new code, while this page lives, continues it.
 * @typedef {object} Held
 * @property {string} fileId base64url
 * @property {number} size
 * @property {number} chunks chunks the download already has
 * @property {import("tube/sinks.js").Sink} sink
 */
/** @type {Held | null} */
let held = null;
/**
 * R: what the offered file continues, if anything: a download held open by this page, or a
 * part kept in OPFS (staging.js).
 * @type {Promise<{chunks: number, sink?: import("tube/sinks.js").Sink} | null>}
 */
let keptPart = Promise.resolve(null);

// ------------------------------------------------------------------ formatting

/**
 * "1.5 MiB", "812 KiB", "27 B".
 * @param {number} bytes
 * @returns {string}
 */
function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/**
 * @param {string} id
 * @param {string} text
 */
function setText(id, text) {
  $(id).textContent = text;
}

/**
 * Show exactly the sections named.
 * @param {...string} ids
 */
function show(...ids) {
  for (const id of ["start", "link-claim", "send", "offer", "status"]) $(id).hidden = !ids.includes(id);
}

/**
 * A problem the person must read (role=alert).
 * @param {string} message
 * @param {string} [kind]
 */
function problem(message, kind = "") {
  const box = $("problem");
  box.textContent = message;
  box.dataset.kind = kind;
  box.hidden = false;
}

// ------------------------------------------------------------------ progress

const progress = {
  size: 0,
  started: 0,
  startBytes: 0,
  bytes: 0,
  /** @type {number | null} */
  timer: null,
};

/** Redraw the progress line: bytes, percentage, speed, time left. */
function drawProgress() {
  const { size, bytes } = progress;
  const percent = size ? (bytes / size) * 100 : 100;
  const bar = /** @type {HTMLProgressElement} */ ($("progress"));
  bar.value = percent;
  bar.setAttribute("aria-valuetext", `${percent.toFixed(0)} percent`);
  const seconds = (performance.now() - progress.started) / 1000;
  const speed = seconds > 0.5 ? (bytes - progress.startBytes) / seconds : 0;
  let text = `${formatBytes(bytes)} of ${formatBytes(size)} (${percent.toFixed(1)} %)`;
  if (speed > 0 && bytes < size) {
    text += ` · ${formatBytes(speed)}/s · about ${formatDuration((size - bytes) / speed)} left`;
  }
  setText("progress-text", text);
}

// ------------------------------------------------------------------ the session's news

/**
 * @param {"send" | "recv"} role
 * @param {Update} update
 */
function onUpdate(role, update) {
  if (update.verifier) {
    setText("verifier-digits", update.verifier);
    $("show-verifier").hidden = false;
  }
  if (update.bytes !== undefined) {
    progress.bytes = update.bytes;
    drawProgress();
  }
  if (update.offer) {
    const offer = update.offer;
    progress.size = offer.size;
    setText("offer-name", offer.name || "(no name)");
    setText("offer-size", `${formatBytes(offer.size)} (${offer.size.toLocaleString("en")} bytes)`);
    setText("offer-type", offer.type || "unknown");
    const open = held && held.fileId === b64u(offer.fileId) && held.size === offer.size ? held : null;
    keptPart = open ? Promise.resolve(open) : findKept(offer.fileId, offer.size).catch(() => null);
    void describeSink(offer.size);
  }
  const phase = update.phase;
  if (!phase) return;
  app.dataset.phase = phase;
  const sending = role === "send";
  /** @type {Record<string, [string, string]>} */
  const texts = {
    connecting: ["Connecting…", "Reaching the relay."],
    waiting: ["Waiting for the receiver…", "Keep this page open until the transfer is done."],
    verifying: [
      sending ? "The receiver is here" : "Connected to the sender",
      "Checking that both sides have the same code…",
    ],
    ready: sending
      ? ["Code checked", "Offering the file to the receiver…"]
      : ["Code checked", "Waiting for the sender's file…"],
    offered: ["Waiting for the receiver to accept…", "They see the file's name and size."],
    transfer: [
      sending ? "Sending…" : "Receiving…",
      `${sending ? $("send-name").textContent : $("offer-name").textContent}, end to end encrypted.`,
    ],
    reconnecting: ["Reconnecting…", "The connection dropped. The transfer resumes where it stopped."],
    finishing: [sending ? "Sending…" : "Saving…", "Finishing the file."],
    done: sending
      ? ["Delivered", "The receiver has the whole file."]
      : ["Saved", "The whole file arrived and was checked."],
    failed: ["Transfer failed", update.error ?? ""],
    cancelled: ["Cancelled", "Nothing more will be sent."],
  };
  const [title, detail] = texts[phase];
  setText("status-title", title);
  setText("status-detail", detail);
  if (phase === "offered" && !sending) {
    show("offer");
    $("accept").focus();
    return;
  }
  show(...(sending ? ["send", "status"] : ["status"]));
  if (sending) $("share").hidden = !["connecting", "waiting"].includes(phase);
  const active = ["transfer", "reconnecting", "finishing"].includes(phase);
  $("progress-box").hidden = !(active || phase === "done");
  if (phase === "transfer" && !progress.started) {
    progress.started = performance.now();
    progress.startBytes = progress.bytes;
    progress.timer = window.setInterval(drawProgress, 500);
  }
  if (phase === "done") {
    progress.bytes = progress.size;
    drawProgress();
    if (!sending) setText("status-detail", `The whole file arrived and was checked: ${$("offer-name").textContent}.`);
  }
  const over = ["done", "failed", "cancelled"].includes(phase);
  if (over && progress.timer !== null) clearInterval(progress.timer);
  $("cancel").hidden = over;
  $("again").hidden = !over;
  if (phase === "failed") {
    let message = update.error ?? "The transfer failed.";
    const kept = update.kept ?? 0;
    if (!sending && kept > 0) {
      // Not the file: a part of it, kept for the same file sent again (staging.js), or a
      // download this page holds open (the stream sink).
      const part = formatBytes(Math.min(progress.size, kept * CHUNK_SIZE));
      const sink = session?.keptSink;
      const offer = session?.peer.offerInfo;
      const again = /** @type {HTMLAnchorElement} */ ($("again"));
      if (sink && sink.kind !== "opfs" && offer) {
        held = { fileId: b64u(offer.fileId), size: offer.size, chunks: kept, sink };
        message += ` The download stays open with ${part} of ${formatBytes(progress.size)}: keep this page open, ask the sender to send the same file again and continue with their new code. Only the rest is sent.`;
        again.dataset.held = "true";
      } else {
        message += ` ${part} of ${formatBytes(progress.size)} is kept in this browser: ask the sender to send the same file again and continue with their new code. Only the rest is sent.`;
        again.href = location.pathname + location.search;
      }
      again.textContent = "Continue with a new code";
      again.dataset.kept = String(kept);
    }
    problem(message, update.errorKind);
    $("again").focus();
  }
  if (phase === "done") $("again").focus();
}

/**
 * Tell the receiver, before they accept, where the file will go.
 * @param {number} size
 */
async function describeSink(size) {
  const accept = /** @type {HTMLButtonElement} */ ($("accept"));
  delete $("offer-sink").dataset.kept;
  const kept = await keptPart;
  if (kept) {
    const part = formatBytes(Math.min(size, kept.chunks * CHUNK_SIZE));
    setText(
      "offer-sink",
      kept.sink
        ? `Your downloads already have ${part} of this file: only the rest is sent, into the same download.`
        : `This browser already has ${part} of this file: only the rest is sent, to the browser's storage, then your downloads.`,
    );
    $("offer-sink").dataset.kept = String(kept.chunks);
    return;
  }
  const hasWorker = (await worker) !== null && (forcedSink === null || forcedSink === "stream");
  let note = "The file goes straight to your downloads folder as it arrives.";
  if (!hasWorker) {
    if ("showSaveFilePicker" in window && (forcedSink === null || forcedSink === "picker")) {
      note = "You will choose where to save the file.";
    } else if (forcedSink !== "memory" && typeof navigator.storage?.getDirectory === "function") {
      note = "The file is written to the browser's storage, then saved to your downloads.";
    } else if (size > MEMORY_LIMIT) {
      note = "This browser can only keep files under 200 MB in memory: use a recent Chrome or Firefox, or the command line.";
      accept.disabled = true;
    } else {
      note = "This browser keeps the file in memory (files under 200 MB only), then saves it.";
    }
  }
  setText("offer-sink", note);
}

// ------------------------------------------------------------------ sending

/** @param {File} file */
async function startSend(file) {
  if (!words) return;
  $("problem").hidden = true;
  /** @type {import("tube/sharing.js").Form[]} */
  let forms;
  try {
    forms = await makeForms(relayHttp, words, `${location.origin}${location.pathname}${location.search}`);
  } catch (error) {
    if (!(error instanceof AllocationError)) throw error;
    problem(error.message, error.kind);
    return;
  }
  const [code, link] = forms;
  setText("send-name", file.name);
  setText("send-size", formatBytes(file.size));
  setText("code-out", code.text);
  $("copy-code").onclick = () => void copy(code.text, "copy-code");
  if (link) {
    /** @type {HTMLInputElement} */ ($("link-out")).value = link.text;
    $("link-qr-code").replaceChildren(qrSvg(link.text, "QR code of the transfer link"));
    $("link-qr").hidden = false;
    $("copy-link").onclick = () => void copy(link.text, "copy-link");
  } else {
    dropForm("link", "The relay gave no link this time (too many codes from your network at once)");
  }
  progress.size = file.size;
  // The code and the link wait on a nameplate each; the first one claimed is used and the
  // other given back (sharing.js), so it does not matter which one the person passes on.
  sharing = new Sharing({
    forms,
    relay: relayWs,
    file,
    onUpdate: (update) => onUpdate("send", update),
    onForm: (form, used, why) => {
      if (used) $("send").dataset.via = form.kind;
      else dropForm(form.kind, why);
    },
  });
  sharing.start();
  $("copy-code").focus();
}

/**
 * A form no longer works before anyone came: hide it, say why and that the other one works.
 * @param {"code" | "link"} kind
 * @param {string} why
 */
function dropForm(kind, why) {
  $(kind === "code" ? "code-line" : "link-line").hidden = true;
  if (kind === "link") $("link-qr").hidden = true;
  const other = kind === "code" ? "link" : "code";
  const reason = why.replace(/[.\s]+$/, "");
  setText("share-note", `${reason ? `${reason}. ` : ""}Only the ${other} works now.`);
  $("share-note").hidden = false;
  if (kind === "code") $("copy-link").focus();
}

/**
 * Copy to the clipboard and say so on the button.
 * @param {string} text
 * @param {string} id
 */
async function copy(text, id) {
  const button = $(id);
  const label = button.dataset.label ?? button.textContent ?? "";
  button.dataset.label = label;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Select and copy";
  }
  setTimeout(() => {
    button.textContent = label;
  }, 2000);
}

// ------------------------------------------------------------------ receiving

/**
 * @param {import("tube/codes.js").ParsedCode} parsed
 */
function startReceive(parsed) {
  $("problem").hidden = true;
  session = new Session({
    role: "recv",
    relay: relayWs,
    nameplate: parsed.nameplate,
    password: parsed.password,
    onUpdate: (update) => onUpdate("recv", update),
  });
  session.start();
}

/** Word completion: the datalist offers the words that finish the last one typed. */
function completeWords() {
  const input = /** @type {HTMLInputElement} */ ($("code"));
  const list = $("code-words");
  if (!words) return;
  const value = input.value;
  const match = /^(.*?)([a-zA-Z]+)$/.exec(value);
  /** @type {string[]} */
  let options = [];
  if (match && /\d/.test(match[1])) {
    const head = match[1];
    options = words.complete(match[2].toLowerCase(), 6).map((word) => head + word);
  }
  list.replaceChildren(
    ...options.filter((option) => option !== value).map((option) => new Option(option, option)),
  );
}

/**
 * R: list the partial files this browser kept (a transfer broken beyond resume), each with a
 * way to delete it; a new code for the same file continues it.
 */
async function showKept() {
  const box = $("kept");
  const kept = await keptFiles();
  box.replaceChildren(
    ...kept.map((part) => {
      const line = document.createElement("p");
      line.className = "hint kept";
      line.dataset.fileId = part.fileId;
      const have = formatBytes(Math.min(part.size, part.chunks * CHUNK_SIZE));
      line.textContent = `Part of “${part.name}” is kept here (${have} of ${formatBytes(part.size)}): enter the sender's new code for it to continue. `;
      const discard = document.createElement("button");
      discard.type = "button";
      discard.className = "secondary";
      discard.textContent = "Delete it";
      discard.setAttribute("aria-label", `Delete the kept part of ${part.name}`);
      discard.addEventListener("click", async () => {
        await discardKept(part.fileId);
        line.remove();
        box.hidden = box.childElementCount === 0;
      });
      line.append(discard);
      return line;
    }),
  );
  box.hidden = kept.length === 0;
}

/** R: give up the download held open for a later session (the browser deletes it). */
async function dropHeld() {
  const open = held;
  held = null;
  if (open) await open.sink.abort().catch(() => {});
}

/**
 * R: back to the start without reloading (a reload would end the download this page holds),
 * to type the sender's new code.
 */
function backToStart() {
  session = null;
  if (progress.timer !== null) clearInterval(progress.timer);
  Object.assign(progress, { size: 0, started: 0, startBytes: 0, bytes: 0, timer: null });
  $("problem").hidden = true;
  /** @type {HTMLButtonElement} */ ($("accept")).disabled = false;
  const again = $("again");
  again.textContent = "Start again";
  delete again.dataset.held;
  delete again.dataset.kept;
  show("start");
  app.dataset.phase = "start";
  const input = /** @type {HTMLInputElement} */ ($("code"));
  input.value = "";
  input.focus();
}

// ------------------------------------------------------------------ start

async function main() {
  if (!window.isSecureContext || !globalThis.crypto?.subtle) {
    problem(
      "Tube's encryption needs a secure page: open it over https://, or as http://localhost on this computer.",
      "insecure",
    );
    app.dataset.phase = "unsupported";
    return;
  }
  if (!(await hasX25519())) {
    problem(
      "This browser is too old for Tube's encryption: it needs X25519 in WebCrypto (Chrome 133, Firefox 130, Safari 17 or newer). Update it, or use the command line: python -m tube send FILE / python -m tube receive CODE.",
      "too-old",
    );
    app.dataset.phase = "unsupported";
    return;
  }
  const meta = /** @type {HTMLMetaElement} */ (document.querySelector('meta[name="tube-wordlist"]'));
  try {
    words = await WordList.load(meta.content, meta.dataset.integrity ?? "");
  } catch {
    problem("The page could not load its word list. Reload the page.", "load");
    return;
  }
  worker = streamWorker();

  const fileInput = /** @type {HTMLInputElement} */ ($("file"));
  fileInput.addEventListener("change", () => {
    const file = fileInput.files?.[0];
    if (file) void startSend(file);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer?.files[0];
    if (file) void startSend(file);
  });

  const codeInput = /** @type {HTMLInputElement} */ ($("code"));
  codeInput.addEventListener("input", () => {
    $("code-error").hidden = true;
    codeInput.removeAttribute("aria-invalid");
    completeWords();
  });
  $("receive-form").addEventListener("submit", (event) => {
    event.preventDefault();
    try {
      startReceive(parseCode(/** @type {WordList} */ (words), codeInput.value));
    } catch (error) {
      if (!(error instanceof BadCode)) throw error;
      setText("code-error", error.message);
      $("code-error").hidden = false;
      codeInput.setAttribute("aria-invalid", "true");
      codeInput.focus();
    }
  });

  $("accept").addEventListener("click", async () => {
    const current = session;
    const offer = current?.peer.offerInfo;
    if (!current || !offer) return;
    /** @type {HTMLButtonElement} */ ($("accept")).disabled = true;
    try {
      // The same file (id and size) partly kept from an earlier transfer: continue it.
      const kept = await keptPart;
      if (kept) {
        if (kept.sink) held = null; // the download is this session's now
        current.accept(kept.sink ?? (await stagingSink(offer, kept.chunks, saveBlob)), kept.chunks);
        return;
      }
      const sink = await chooseSink(offer, await worker, forcedSink);
      // Another file: the download held open for the earlier one will not be continued.
      await dropHeld();
      current.accept(sink);
    } catch (error) {
      /** @type {HTMLButtonElement} */ ($("accept")).disabled = false;
      problem(error instanceof Error ? error.message : String(error), "save");
    }
  });
  $("decline").addEventListener("click", () => session?.decline());
  $("again").addEventListener("click", (event) => {
    if (!$("again").dataset.held || !held) return;
    event.preventDefault();
    backToStart();
  });
  $("cancel").addEventListener("click", () => (sharing ?? session)?.cancel());
  $("show-verifier").addEventListener("click", () => {
    const box = $("verifier");
    box.hidden = !box.hidden;
    $("show-verifier").textContent = box.hidden ? "Show verification digits" : "Hide verification digits";
  });

  // A link: #<nameplate>.<secret>. Strip it from the address at once (history, screenshots),
  // and claim only on a click, so that a link scanner cannot burn the one-time code.
  const fragment = decodeURIComponent(location.hash.slice(1));
  if (fragment) {
    history.replaceState(null, "", location.pathname + location.search);
    try {
      const parsed = parseCode(words, fragment);
      show("link-claim");
      app.dataset.phase = "link";
      $("connect").addEventListener("click", () => startReceive(parsed), { once: true });
      $("connect").focus();
      return;
    } catch {
      problem("This link is damaged: ask the sender for a new one.", "bad-link");
    }
  }
  show("start");
  app.dataset.phase = "start";
  void showKept();
  // A link pasted into the address bar of an open page changes only the fragment: start over
  // as if it had been opened fresh.
  window.addEventListener("hashchange", () => {
    if (location.hash.length > 1 && !session && !sharing) location.reload();
  });
}

void main();
