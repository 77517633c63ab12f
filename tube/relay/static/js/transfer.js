// @ts-check
/**
 * One transfer, sender or receiver: the TRP/1 socket to the relay (hello, wait or claim,
 * paired, peer news, resume with back-off), the end-to-end Peer, and the file or the sink.
 * Reports what happens to the page through `onUpdate` and never touches the DOM.
 *
 * Ordering: WebCrypto is asynchronous and the Peer is not re-entrant, so every Peer call runs in
 * one promise chain (`serial`), frames in arrival order. The sender's pump reads the file
 * outside that chain and hands each chunk in; the receiver's writes run in a second chain,
 * chunk after chunk, each acknowledged (`chunkWritten`) once its write resolved.
 *
 * Backpressure (design §5.6): the sender sends chunk j only within R's credit window, and
 * waits while the socket's bufferedAmount is above 1 MiB until it is below 256 KiB.
 * @module
 */

/** @typedef {import("tube/bytes.js").Bytes} Bytes */
/** @typedef {import("tube/sinks.js").Sink} Sink */
/** @typedef {import("tube/peer.js").Offer} Offer */
/** @typedef {import("tube/peer.js").PeerEvent} PeerEvent */
import { b64u, b64uDecode, randomBytes, utf8 } from "tube/bytes.js";
import { IntegrityError, WrongCode } from "tube/errors.js";
import { CHUNK_SIZE, expectedLength } from "tube/framing.js";
import { fileId } from "tube/keys.js";
import { CANCEL_INTEGRITY, CANCEL_PROTOCOL, Peer } from "tube/peer.js";

export const SUBPROTOCOL = "tube.relay.v1";
const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 256 * 1024;
// Resume back-off (design §5.9): 1 s, x 1.5, at most 30 s, within the relay's grace (120 s).
const FIRST_DELAY = 1000;
const MAX_DELAY = 30000;
const GRACE = 120000;
// Where this browser keeps its file-id salt (fileIdSalt).
const SALT_KEY = "tube.file-id-salt";
// Failures after which the receiver keeps what it wrote (a sink that can: staging.js), since
// the same file sent again with a new code continues from there: the connection, not the data
// or either person, ended the transfer.
const KEEP_KINDS = new Set(["connection", "resume-failed", "peer-left", "stalled", "busy"]);
// A download held open (the stream sink) only when the relay itself went away: it stays in the
// browser's downloads as unfinished, worth it when both sides will come back at once; when
// the other side left or stopped, the download is failed as before (nothing partial is left).
const HOLD_KINDS = new Set(["connection", "resume-failed"]);

/**
 * What the page shows; every field is optional, only what changed is sent.
 * @typedef {object} Update
 * @property {"connecting" | "waiting" | "verifying" | "ready" | "offered" | "transfer"
 *   | "reconnecting" | "finishing" | "done" | "failed" | "cancelled"} [phase]
 * @property {Offer} [offer] R: what S offers
 * @property {number} [bytes] bytes acknowledged (S) or written (R)
 * @property {string} [verifier] the six digits
 * @property {string} [error] a message for a person
 * @property {string} [errorKind] "wrong-code" | "integrity" | "peer-left" | ... (for tests and styling)
 * @property {number} [kept] R, with "failed": chunks of the file kept in this browser for a
 *   transfer with a new code (staging.js), 0 if none
 */

/**
 * The message a close code means to a person (docs/relay.md, "Close codes").
 * @param {number} code
 * @param {number | null} retryAfter seconds, from the relay's error message
 * @param {"send" | "recv"} role
 * @returns {[string, string]} [kind, message]
 */
export function closeMessage(code, retryAfter, role) {
  switch (code) {
    case 4002:
      return role === "recv"
        ? ["expired", "This code has expired or was already used. Ask the sender for a new one."]
        : ["expired", "This code expired. Start again to get a new code."];
    case 4004: {
      const wait = retryAfter ? ` Try again in ${formatDuration(retryAfter)}.` : "";
      return ["rate-limited", `Too many attempts from your network.${wait}`];
    }
    case 4005:
      return ["expired", "Nobody came to receive the file within 10 minutes: the code has expired."];
    case 4006:
      return ["peer-left", "The other side left before the transfer finished."];
    case 4007:
      return ["limit", "The transfer is over the relay's limit (64 GiB or 24 hours)."];
    case 4008:
      return ["stalled", "The transfer stalled: the other side stopped reading."];
    case 4009:
      return ["busy", "The relay is busy. Try again in a minute."];
    case 4010:
      return ["resume-failed", "The connection could not be resumed (the relay restarted, or the break was too long). Start again with a new code."];
    case 4003:
      return ["crowded", "Someone else is already using this code."];
    case 1009:
    case 4000:
    case 4001:
      return ["protocol", `The relay refused the connection (code ${code}). Reload the page and try again.`];
    default:
      return ["connection", "The connection to the relay was lost."];
  }
}

/**
 * "2 min 5 s", "40 s".
 * @param {number} seconds
 * @returns {string}
 */
export function formatDuration(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

/**
 * This browser's file-id salt (design §5.9), as the command line's salt file: 16 random bytes
 * kept in localStorage, so that the same file sent again after a reload has the same id and a
 * receiver that kept part of it (`python -m tube receive`) continues where it stopped. A secret
 * of this browser: with it the id tells the relay nothing about the file. Without storage
 * (switched off, or full), a fresh salt per call: that transfer cannot be continued later.
 * @param {Storage | null} [storage] localStorage unless given (reading it may throw)
 * @returns {Bytes}
 */
export function fileIdSalt(storage) {
  try {
    const store = storage === undefined ? globalThis.localStorage : storage;
    const kept = store ? b64uDecode(store.getItem(SALT_KEY), 16) : null;
    if (kept) return kept;
    const salt = randomBytes(16);
    store?.setItem(SALT_KEY, b64u(salt));
    return salt;
  } catch {
    return randomBytes(16);
  }
}

/**
 * What an end-to-end failure means to a person.
 * @param {Error} error
 * @returns {[string, string]}
 */
function e2eMessage(error) {
  if (error instanceof WrongCode) {
    return ["wrong-code", "Wrong code or interference: the two sides do not share the same code, or someone tried to sit in the middle. Nothing was sent. Check the code and start again."];
  }
  if (error instanceof IntegrityError) {
    return ["integrity", "Integrity error: part of the file was altered or lost in transit, so it was stopped and the partial file deleted."];
  }
  return ["protocol", `The other side broke the protocol (${error.message}). The transfer was stopped.`];
}

/**
 * What the other side's cancel means to a person: "declined", a failure of its own once the
 * keys were confirmed (peer.js sends CANCEL_INTEGRITY or CANCEL_PROTOCOL before its bye), or
 * the person over there cancelled.
 * @param {string} reason the cancel's reason, as the other side sent it
 * @param {"send" | "recv"} role this side's role
 * @returns {[string, string]} [kind, message]
 */
export function peerCancelMessage(reason, role) {
  const other = role === "send" ? "The receiver" : "The sender";
  const partial = role === "recv" ? " The partial file was deleted." : "";
  if (reason === "declined") return ["declined", "The receiver declined the file."];
  if (reason === CANCEL_INTEGRITY) {
    return ["peer-integrity", `${other} stopped: the data was damaged in transit (integrity error).${partial} Start again with a new code.`];
  }
  if (reason === CANCEL_PROTOCOL) {
    return ["peer-protocol", `${other} stopped: it received a message it could not take (protocol error).${partial} Start again with a new code.`];
  }
  return ["cancelled", "The other side cancelled the transfer."];
}

/** A transfer in progress; see the module docstring. */
export class Session {
  /**
   * @param {object} options
   * @param {"send" | "recv"} options.role
   * @param {string} options.relay the relay's WebSocket base URL (ws://host:port)
   * @param {string} options.nameplate
   * @param {string} options.password the normalised code
   * @param {(update: Update) => void} options.onUpdate
   * @param {File} [options.file] S: the file to send
   */
  constructor({ role, relay, nameplate, password, onUpdate, file }) {
    this.role = role;
    this.relay = relay;
    this.nameplate = nameplate;
    this.onUpdate = onUpdate;
    this.file = file ?? null;
    this.peer = new Peer(role, utf8(password));
    /** @type {WebSocket | null} */
    this.socket = null;
    /** @type {Promise<unknown>} the Peer's one call chain */
    this.chain = Promise.resolve();
    /** @type {Promise<unknown>} R: the sink's write chain */
    this.writes = Promise.resolve();
    /** @type {Sink | null} */
    this.sink = null;
    this.paired = false; // the first pairing happened
    this.ridRegistered = false; // we sent resumable (the relay registers it when both did)
    this.finished = false;
    this.retryAfter = /** @type {number | null} */ (null);
    this.lostAt = 0; // when the connection dropped, for the grace period
    this.delay = FIRST_DELAY; // before the next resume attempt
    this.pumping = false;
    this.kick = false;
    this.cancelled = false;
    this.waitSent = false; // S: the relay has our wait (or claim): a bye now frees the nameplate
    this.withdrawn = false; // S: withdraw() was called; nothing more is shown or sent
    this.keeping = false; // R: the transfer broke; the chunks already here are still written
    /** @type {Sink | null} R: the sink kept for a later session (see Sink.keep) */
    this.keptSink = null;
  }

  /** Connect and run. */
  start() {
    this.onUpdate({ phase: "connecting" });
    this._connect(`${this.relay}/v1/relay/${this.nameplate}`, false);
  }

  /**
   * S: give this nameplate back, quietly (no more updates): the receiver came through the
   * sender's other form (the code or the link, see sharing.js), or the person cancelled while
   * waiting. `bye{"mood":"lonely"}` while waiting makes the relay delete the nameplate at once
   * (a later claim gets 4002); a socket still opening sends `wait` then `bye` as soon as the
   * relay welcomes it, since only a waiting sender's bye deletes an allocated nameplate.
   */
  withdraw() {
    if (this.withdrawn) return;
    this.withdrawn = true;
    this.finished = true;
    this.onUpdate = () => {};
    if (this.waitSent) this._bye();
  }

  /** Send `bye{"mood":"lonely"}` and close (withdraw's second half). */
  _bye() {
    const socket = this.socket;
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ t: "bye", mood: "lonely" }));
      socket.close(1000);
    }
  }

  /**
   * Run `fn` after every Peer call before it; errors end the session.
   * @param {() => Promise<void> | void} fn
   * @returns {Promise<void>}
   */
  serial(fn) {
    const next = this.chain.then(fn).catch((error) => this._crash(error));
    this.chain = next;
    return next;
  }

  // ---------------------------------------------------------------- the socket

  /**
   * @param {string} url
   * @param {boolean} resuming
   */
  _connect(url, resuming) {
    let socket;
    try {
      socket = new WebSocket(url, SUBPROTOCOL);
    } catch (error) {
      this._fail("connection", `Cannot reach the relay: ${error}`);
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => socket.send(JSON.stringify({ t: "hello", v: 1, role: this.role }));
    socket.onmessage = (event) => {
      if (socket !== this.socket) return;
      if (typeof event.data === "string") this._control(event.data, resuming);
      else {
        const frame = new Uint8Array(/** @type {ArrayBuffer} */ (event.data));
        this.serial(async () => {
          await this.peer.receive(frame);
          this._flush();
        });
      }
    };
    socket.onclose = (event) => {
      if (socket !== this.socket) return;
      this.serial(() => this._closed(event.code));
    };
  }

  /**
   * A relay control message (text frame).
   * @param {string} text
   * @param {boolean} resuming
   */
  _control(text, resuming) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    const socket = /** @type {WebSocket} */ (this.socket);
    switch (message.t) {
      case "welcome":
        if (resuming) {
          socket.send(JSON.stringify({ t: "resume", rid: this.peer.rid, role: this.role }));
        } else {
          socket.send(JSON.stringify({ t: this.role === "send" ? "wait" : "claim" }));
          this.waitSent = true;
          if (this.withdrawn) this._bye();
          else if (this.role === "send") this.onUpdate({ phase: "waiting" });
        }
        break;
      case "paired": {
        if (this.withdrawn) return;
        const pairId = b64uDecode(message.pair_id, 16);
        if (pairId === null) return;
        this.serial(async () => {
          if (!this.paired) {
            this.paired = true;
            this.onUpdate({ phase: "verifying" });
            await this.peer.paired(pairId);
          } else {
            // Our resume worked: the pair is whole again.
            this.lostAt = 0;
            this.onUpdate({ phase: this._activePhase() });
            await this.peer.resumed();
          }
          this._flush();
        });
        break;
      }
      case "peer":
        this.serial(async () => {
          if (message.state === "lost") {
            this.peer.peerLost();
            if (!this.peer.isFinished) this.onUpdate({ phase: "reconnecting" });
          } else if (message.state === "back") {
            await this.peer.resumed();
            this._flush();
            if (!this.peer.isFinished) this.onUpdate({ phase: this._activePhase() });
          }
          // "gone": the relay closes us with 4006 unless we finished (bye) first.
        });
        break;
      case "error":
        this.retryAfter = typeof message.retry_after === "number" ? message.retry_after : null;
        break;
      default:
        break;
    }
  }

  /** The phase to show once the pair is whole again. */
  _activePhase() {
    const state = this.peer.state;
    if (state === "transfer") return "transfer";
    if (state === "finishing") return "finishing";
    if (state === "offered") return "offered";
    return "ready";
  }

  /**
   * The socket closed with `code`.
   * @param {number} code
   */
  async _closed(code) {
    if (this.finished || this.peer.isFinished) return;
    // A drop after both sides registered the rid: resume within the grace period (§5.9).
    const resumable = this.ridRegistered && [1001, 1005, 1006, 1011, 4003].includes(code);
    if (resumable) {
      // The first drop starts the grace clock; each failed attempt waits 1.5 times longer.
      if (!this.lostAt) {
        this.lostAt = Date.now();
        this.delay = FIRST_DELAY;
      } else {
        this.delay = Math.min(this.delay * 1.5, MAX_DELAY);
      }
      this.peer.peerLost();
      this.onUpdate({ phase: "reconnecting" });
      if (Date.now() + this.delay - this.lostAt > GRACE) {
        const message = closeMessage(4010, null, this.role)[1];
        // Not awaited: the writes it waits for may be waiting for this chain.
        void this._releaseSink("resume-failed").then((kept) => this._fail("resume-failed", message, kept));
        return;
      }
      setTimeout(() => {
        if (!this.finished) this._connect(`${this.relay}/v1/relay`, true);
      }, this.delay);
      return;
    }
    const [kind, message] = closeMessage(code, this.retryAfter, this.role);
    void this._releaseSink(kind).then((kept) => this._fail(kind, message, kept));
  }

  /** Send what the Peer queued, and act on its events. */
  _flush() {
    if (this.withdrawn) return;
    const socket = this.socket;
    for (const item of this.peer.dataToSend()) {
      if (typeof item === "string" && item.includes('"resumable"')) this.ridRegistered = true;
      // While the link is down, frames are dropped: resume_hello re-sends what matters.
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(item);
    }
    for (const event of this.peer.events()) this._event(event);
  }

  /** @param {PeerEvent} event */
  _event(event) {
    switch (event.type) {
      case "verified":
        this.onUpdate({ phase: "ready", verifier: event.verifier });
        if (this.role === "send") this.serial(() => this._offer());
        break;
      case "offer":
        this.onUpdate({ phase: "offered", offer: event.offer });
        break;
      case "accepted":
        this.startedAt = performance.now();
        this.startBytes = event.resumeFrom * CHUNK_SIZE;
        this.onUpdate({ phase: "transfer", bytes: this._ackedBytes() });
        this._pump();
        break;
      case "progress":
        this.onUpdate({ bytes: this._ackedBytes() });
        this._pump();
        break;
      case "resynced":
        this._pump();
        break;
      case "chunk":
        this._write(event.index, event.plaintext, event.final);
        break;
      case "done":
        this.finished = true;
        this.onUpdate({ phase: "done", bytes: this.peer.offerInfo?.size ?? 0 });
        break;
      case "cancelled":
        this.finished = true;
        void this._abortSink();
        this._fail(...peerCancelMessage(event.reason, this.role));
        break;
      case "failed": {
        this.finished = true;
        const [kind, message] = e2eMessage(event.error);
        void this._abortSink().then(() => this._fail(kind, message));
        break;
      }
    }
  }

  /** S: bytes R acknowledged. */
  _ackedBytes() {
    const offer = this.peer.offerInfo;
    if (!offer) return 0;
    return Math.min(offer.size, (this.peer.through + 1) * CHUNK_SIZE);
  }

  /**
   * @param {string} kind
   * @param {string} message
   * @param {number} [kept] R: chunks kept for a later session
   */
  _fail(kind, message, kept = 0) {
    this.finished = true;
    this.onUpdate({ phase: "failed", errorKind: kind, error: message, kept });
    const socket = this.socket;
    if (socket && socket.readyState === WebSocket.OPEN) {
      // The Peer's own bye (if any) is already sent; closing tells the relay we are gone.
      setTimeout(() => socket.close(1000), 500);
    }
  }

  /** @param {unknown} error a bug in the page, or a failed disk write */
  async _crash(error) {
    if (this.finished || this.keeping) return;
    console.error(error);
    await this._abortSink();
    if (!this.peer.isFinished && ["ready", "offered", "transfer", "finishing"].includes(this.peer.state)) {
      try {
        await this.peer.cancel("failed");
        this._flushOutOnly();
      } catch {
        // The peer is already over.
      }
    }
    this._fail("local", `The transfer stopped: ${error instanceof Error ? error.message : error}`);
  }

  _flushOutOnly() {
    const socket = this.socket;
    for (const item of this.peer.dataToSend()) {
      if (socket && socket.readyState === WebSocket.OPEN) socket.send(item);
    }
    this.peer.events();
  }

  /** Either side: stop, tell the peer, delete the partial file. */
  cancel() {
    this.serial(async () => {
      if (this.finished) return;
      this.cancelled = true;
      if (["ready", "offered", "transfer", "finishing"].includes(this.peer.state)) {
        await this.peer.cancel("cancelled");
        this._flushOutOnly();
      }
      await this._abortSink();
      this.finished = true;
      this.onUpdate({ phase: "cancelled" });
      setTimeout(() => this.socket?.close(1000), 500);
    });
  }

  // ---------------------------------------------------------------- the sender

  async _offer() {
    const file = /** @type {File} */ (this.file);
    // A stable id for the same file across sessions and reloads (design §5.9).
    const lastModified = Math.max(0, Math.floor(file.lastModified || 0));
    const id = await fileId(fileIdSalt(), file.name, file.size, lastModified);
    await this.peer.offer({ fileId: id, name: file.name, size: file.size, type: file.type, lastModified });
    this._flush();
  }

  /** S: send chunks while the credit window and the socket's buffer allow. */
  async _pump() {
    this.kick = true;
    if (this.pumping || this.role !== "send") return;
    this.pumping = true;
    try {
      for (;;) {
        this.kick = false;
        const socket = this.socket;
        if (!socket || socket.readyState !== WebSocket.OPEN || this.finished) break;
        if (socket.bufferedAmount > HIGH_WATER) {
          await waitFor(() => socket.bufferedAmount < LOW_WATER || socket.readyState !== WebSocket.OPEN);
          continue;
        }
        if (!this.peer.canSendChunk()) {
          if (this.kick) continue;
          break;
        }
        const index = this.peer.nextChunkWanted();
        const offer = /** @type {Offer} */ (this.peer.offerInfo);
        const start = index * CHUNK_SIZE;
        const file = /** @type {File} */ (this.file);
        const plaintext = new Uint8Array(await file.slice(start, start + expectedLength(offer.size, index)).arrayBuffer());
        await this.serial(async () => {
          if (this.peer.canSendChunk() && this.peer.nextChunkWanted() === index) {
            await this.peer.sendChunk(index, plaintext);
            this._flush();
          }
        });
      }
    } finally {
      this.pumping = false;
    }
  }

  // ---------------------------------------------------------------- the receiver

  /**
   * R: the person accepted; `sink` is where the file goes, from chunk `resumeFrom` on (the
   * chunks a kept partial already has: the sender skips them).
   * @param {Sink} sink
   * @param {number} [resumeFrom]
   */
  accept(sink, resumeFrom = 0) {
    this.sink = sink;
    const size = this.peer.offerInfo?.size ?? 0;
    const bytes = Math.min(size, resumeFrom * CHUNK_SIZE);
    this.startedAt = performance.now();
    this.startBytes = bytes;
    this.written = bytes;
    this.serial(async () => {
      await this.peer.acceptOffer(resumeFrom);
      this._flush();
      this.onUpdate({ phase: "transfer", bytes });
    });
  }

  /** R: the person declined. */
  decline() {
    this.serial(async () => {
      await this.peer.decline();
      this._flush();
      this.finished = true;
      this.onUpdate({ phase: "cancelled" });
    });
  }

  /**
   * R: write chunk `index`, then acknowledge it; after the final one, finish the file and
   * send done (success is only that).
   * @param {number} index
   * @param {Bytes} plaintext
   * @param {boolean} final
   */
  _write(index, plaintext, final) {
    const sink = /** @type {Sink} */ (this.sink);
    const length = plaintext.length;
    this.writes = this.writes.then(async () => {
      if (this.finished || (this.keeping && final)) return;
      await sink.write(plaintext);
      this.written = (this.written ?? 0) + length;
      if (this.keeping) return; // the transfer broke: no ack, only the chunk kept
      await this.serial(async () => {
        if (this.peer.isFinished) return;
        await this.peer.chunkWritten(index);
        this._flush();
        this.onUpdate({ bytes: index * CHUNK_SIZE + length });
      });
      if (final) {
        this.onUpdate({ phase: "finishing" });
        await sink.close();
        await this.serial(async () => {
          if (this.peer.isFinished) return;
          await this.peer.complete();
          this._flush();
        });
      }
    }).catch((error) => this._crash(error));
  }

  async _abortSink() {
    const sink = this.sink;
    this.sink = null;
    if (sink) await sink.abort().catch(() => {});
  }

  /**
   * R: the transfer ended without the file, for a failure of `kind`: keep what the sink
   * wrote when the failure allows (KEEP_KINDS, HOLD_KINDS) and the sink can (a later session
   * continues from it), else delete it.
   * @param {string} kind
   * @returns {Promise<number>} the chunks kept
   */
  async _releaseSink(kind) {
    const sink = this.sink;
    const keep = KEEP_KINDS.has(kind) && (sink?.kind !== "stream" || HOLD_KINDS.has(kind));
    if (!keep || !sink?.keep) {
      this.finished = true;
      await this._abortSink();
      return 0;
    }
    // The chunks that arrived before the break are authenticated: write them too (without
    // acks, and never finishing the file), then keep what the sink made durable.
    this.sink = null;
    this.keeping = true;
    await this.writes;
    this.finished = true;
    const kept = await sink.keep().catch(() => 0);
    if (kept > 0) this.keptSink = sink;
    else await sink.abort().catch(() => {});
    return kept;
  }
}

/**
 * Resolve once `condition()` holds, checking every 10 ms (bufferedAmount has no event).
 * @param {() => boolean} condition
 * @returns {Promise<void>}
 */
function waitFor(condition) {
  return new Promise((resolve) => {
    const check = () => (condition() ? resolve() : setTimeout(check, 10));
    check();
  });
}
