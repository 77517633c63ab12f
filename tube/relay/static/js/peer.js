// @ts-check
/**
 * The end-to-end peer: one side (sender S or receiver R) of a transfer, as a state machine,
 * message for message the same as `tube/relay/e2e/peer.py` (read its module docstring for the
 * sequence, the credit window and resume). No sockets and no DOM: the caller feeds in what
 * arrives and what the person or the disk did, and drains `dataToSend()` (Bytes: a binary frame;
 * string: relay control JSON) and `events()`.
 *
 * WebCrypto is asynchronous, so every input is an async method. The caller must run them one
 * at a time, in order (transfer.js chains them): the state machine is not re-entrant.
 *
 * Failures caused by the peer or a relay in the middle never throw out of `receive()`: the peer
 * moves to "failed", emits `{type: "failed", error}` and queues a `bye`. Once the keys are
 * confirmed it first queues a sealed `{"t":"cancel","reason":"integrity"|"protocol"}`
 * (CANCEL_INTEGRITY, CANCEL_PROTOCOL) under its next counter, so the other side learns why and
 * not only that this side left; before confirmation there is no sealed channel: `bye` alone.
 * Misuse by the caller throws PeerStateError at once.
 * @module
 */

/** @typedef {import("tube/bytes.js").Bytes} Bytes */
import { b64u, b64uDecode, randomBytes } from "tube/bytes.js";
import { CPace } from "tube/cpace.js";
import { E2EError, IntegrityError, PeerStateError, ProtocolViolation, WrongCode } from "tube/errors.js";
import {
  CHUNK_SIZE,
  COMMIT,
  CONFIRM,
  CPACE,
  ChunkOpener,
  CtrlOpener,
  DATA,
  MAX_SIZE,
  SEALED_CTRL,
  chunkCount,
  ctrlPlaintext,
  expectedLength,
  sealChunk,
  sealCtrl,
} from "tube/framing.js";
import { checkConfirm, commitment, confirmTag, deriveKeys, matchesCommitment } from "tube/keys.js";

/** Chunks R lets S send beyond the last acknowledged one (4 MiB). */
export const DEFAULT_WINDOW = 16;
/** The largest window either side accepts. */
export const MAX_WINDOW = 64;
/** The `reason` of the cancel a side sends when it fails with an IntegrityError once the keys are confirmed. */
export const CANCEL_INTEGRITY = "integrity";
/** The same for a ProtocolViolation (a frame or message of the wrong shape or state). */
export const CANCEL_PROTOCOL = "protocol";
const NONCE_LENGTH = 16;
const FILE_ID_LENGTH = 16;
const MAX_NAME_CHARS = 1024;
const MAX_TYPE_CHARS = 255;
const MAX_REASON_CHARS = 200;
const U32_MAX = 0xffffffff;
// Control messages the peer must not miss: re-sent after a resume if its rx is below them.
const IMPORTANT = new Set(["offer", "accept", "done", "cancel"]);

/**
 * @typedef {"new" | "wait_commit" | "wait_cpace" | "wait_confirm" | "ready" | "offered"
 *   | "transfer" | "finishing" | "done" | "cancelled" | "failed"} State
 */

/**
 * What S offers.
 * @typedef {object} Offer
 * @property {Bytes} fileId
 * @property {string} name as S states it (R sanitises it before use)
 * @property {number} size bytes
 * @property {string} type
 * @property {number} lastModified milliseconds since 1970
 * @property {number} chunks the number of DATA chunks
 */

/**
 * The peer's events, as in peer.py.
 * @typedef {{type: "verified", verifier: string}
 *   | {type: "offer", offer: Offer}
 *   | {type: "accepted", resumeFrom: number, window: number}
 *   | {type: "chunk", index: number, plaintext: Bytes, final: boolean}
 *   | {type: "progress", through: number}
 *   | {type: "resynced", epoch: number}
 *   | {type: "done"}
 *   | {type: "cancelled", reason: string}
 *   | {type: "failed", error: E2EError}} PeerEvent
 */

const TERMINAL = new Set(["done", "cancelled", "failed"]);
const SESSION = ["ready", "offered", "transfer", "finishing"];

// What each role and state accepts from the peer: frame names for the key exchange and DATA,
// the "t" of sealed control messages. With LOCAL below, this is the whole state machine.
/** @type {Record<string, Set<string>>} */
const ACCEPTS = {
  "send/wait_cpace": new Set(["CPACE"]),
  "send/wait_confirm": new Set(["CONFIRM"]),
  "send/ready": new Set(["cancel", "resume_hello"]),
  "send/offered": new Set(["accept", "cancel", "resume_hello"]),
  "send/transfer": new Set(["ack", "done", "cancel", "resume_hello"]),
  "recv/wait_commit": new Set(["COMMIT"]),
  "recv/wait_cpace": new Set(["CPACE"]),
  "recv/wait_confirm": new Set(["CONFIRM"]),
  "recv/ready": new Set(["offer", "cancel", "resume_hello"]),
  "recv/offered": new Set(["cancel", "resume_hello"]),
  "recv/transfer": new Set(["DATA", "cancel", "resume_hello"]),
  "recv/finishing": new Set(["cancel", "resume_hello"]),
};

/** @param {string[]} roles @param {string[]} states @returns {Set<string>} */
const pairs = (roles, states) => new Set(roles.flatMap((r) => states.map((s) => `${r}/${s}`)));
const BOTH = ["send", "recv"];
// What the caller may do in which role and state.
/** @type {Record<string, Set<string>>} */
const LOCAL = {
  paired: pairs(BOTH, ["new"]),
  offer: pairs(["send"], ["ready"]),
  sendChunk: pairs(["send"], ["transfer"]),
  acceptOffer: pairs(["recv"], ["offered"]),
  decline: pairs(["recv"], ["offered"]),
  chunkWritten: pairs(["recv"], ["transfer", "finishing"]),
  complete: pairs(["recv"], ["finishing"]),
  cancel: pairs(BOTH, SESSION),
  // After the end these two are harmless news and are ignored.
  peerLost: pairs(BOTH, [...SESSION, ...TERMINAL]),
  resumed: pairs(BOTH, [...SESSION, ...TERMINAL]),
};

/** @type {Record<number, string>} */
const FRAME_NAMES = { [COMMIT]: "COMMIT", [CPACE]: "CPACE", [CONFIRM]: "CONFIRM", [DATA]: "DATA" };

/**
 * An integer field in [low, high] (booleans and floats refused, as the Python peer does).
 * @param {Record<string, any>} obj @param {string} field @param {number} low @param {number} high
 * @returns {number}
 */
function int(obj, field, low, high) {
  const value = obj[field];
  if (!Number.isSafeInteger(value) || value < low || value > high) {
    throw new ProtocolViolation(`${obj.t}.${field} must be an integer ${low}..${high}`);
  }
  return value;
}

/**
 * A string field of at most `limit` characters (Python counts code points).
 * @param {Record<string, any>} obj @param {string} field @param {number} limit
 * @returns {string}
 */
function str(obj, field, limit) {
  const value = obj[field];
  if (typeof value !== "string" || [...value].length > limit) {
    throw new ProtocolViolation(`${obj.t}.${field} must be a string of at most ${limit} chars`);
  }
  return value;
}

/**
 * A canonical base64url field of `length` bytes.
 * @param {unknown} text @param {number} length @param {string} field
 * @returns {Bytes}
 */
function b64Field(text, length, field) {
  const raw = b64uDecode(text, length);
  if (raw === null) throw new ProtocolViolation(`${field} must be ${length} bytes in base64url`);
  return raw;
}

/** @param {Record<string, unknown>} obj */
const relayText = (obj) => JSON.stringify(obj);

/**
 * @param {Offer} offer @param {number} epoch @param {Bytes} nonce
 * @returns {Record<string, unknown>}
 */
function offerMessage(offer, epoch, nonce) {
  return {
    t: "offer",
    file_id: b64u(offer.fileId),
    name: offer.name,
    size: offer.size,
    type: offer.type,
    lastModified: offer.lastModified,
    chunk: CHUNK_SIZE,
    epoch,
    nonce: b64u(nonce),
  };
}

/** One side of a transfer. */
export class Peer {
  /**
   * @param {"send" | "recv"} role
   * @param {Bytes} password UTF-8 of the normalised code (CPace's PRS)
   * @param {{rng?: (n: number) => Bytes, cpace?: (prs: Bytes, sid: Bytes, role: "send" | "recv") => Promise<CPace>}} [options]
   */
  constructor(role, password, options = {}) {
    if (role !== "send" && role !== "recv") throw new RangeError("role must be send or recv");
    if (!password.length) throw new RangeError("the password must not be empty");
    this.role = role;
    /** @type {State} */
    this.state = "new";
    this._password = password;
    this._rng = options.rng ?? randomBytes;
    this._cpaceFactory = options.cpace ?? ((prs, sid, r) => CPace.start(prs, sid, r));
    /** @type {(Bytes | string)[]} */
    this._out = [];
    /** @type {PeerEvent[]} */
    this._events = [];
    // Key exchange.
    /** @type {CPace | null} */
    this._cpace = null;
    this._sid = new Uint8Array(0);
    this._commit = new Uint8Array(0);
    /** @type {import("tube/keys.js").SessionKeys | null} */
    this._keys = null;
    this._transcript = new Uint8Array(0);
    /** @type {CryptoKey | null} */
    this._ownCtrlKey = null;
    /** @type {CryptoKey | null} */
    this._peerCtrlKey = null;
    // Sealed control messages.
    this._txCounter = 0;
    /** @type {CtrlOpener | null} */
    this._opener = null;
    this._rxProcessed = -1;
    /** @type {[number, Record<string, any>][]} */
    this._sentImportant = [];
    // The stream.
    /** @type {Offer | null} */
    this.offerInfo = null;
    this._epoch = 0;
    /** @type {Bytes} S: ours; R: S's */
    this._streamNonce = new Uint8Array(0);
    /** @type {CryptoKey | null} */
    this._dataKey = null;
    this._window = DEFAULT_WINDOW;
    this._nextIndex = 0; // S: the next chunk to send
    this.through = -1; // S: R's last acknowledgement
    /** @type {ChunkOpener | null} */
    this._chunks = null;
    this._received = -1; // R: the last chunk emitted
    this._written = -1;
    this._acked = -1;
    // Resume.
    this._awaitingHello = false;
    this._resyncOwed = false;
    this._linkDown = false;
    this._awaitAck = false; // S after a resync: wait for R's ack before sending
  }

  // ---------------------------------------------------------------- outputs

  /** What to send, in order: Bytes binary frames, strings relay control JSON. @returns {(Bytes | string)[]} */
  dataToSend() {
    const out = this._out;
    this._out = [];
    return out;
  }

  /** @returns {PeerEvent[]} the events since the last call */
  events() {
    const events = this._events;
    this._events = [];
    return events;
  }

  /** The six verification digits once the keys are confirmed, else null. */
  get verifier() {
    return this._opener !== null && this._keys ? this._keys.verifier : null;
  }

  /** True once the peer reached an end state. */
  get isFinished() {
    return TERMINAL.has(this.state);
  }

  /** The rid to resume with (after confirmation). */
  get rid() {
    return this._keys ? b64u(this._keys.rid) : null;
  }

  // ---------------------------------------------------------------- inputs: the relay

  /**
   * The relay paired us; `pairId` (16 bytes) is CPace's sid. S sends COMMIT.
   * @param {Bytes} pairId
   */
  async paired(pairId) {
    this._checkLocal("paired");
    if (pairId.length !== 16) throw new RangeError("pair_id must be 16 bytes");
    this._sid = pairId;
    this._cpace = await this._cpaceFactory(this._password, pairId, this.role);
    if (this.role === "send") {
      this._out.push(Uint8Array.of(COMMIT, ...(await commitment(this._cpace.message))));
      this.state = "wait_cpace";
    } else {
      this.state = "wait_commit";
    }
  }

  /**
   * Feed one binary frame from the relay. Failures become a "failed" event.
   * @param {Bytes} frame
   */
  async receive(frame) {
    if (this.isFinished) return;
    try {
      await this._receive(frame);
    } catch (error) {
      if (!(error instanceof E2EError)) throw error;
      await this._fail(error);
    }
  }

  /** The relay said peer:lost, or our own socket dropped: stop sending DATA. */
  peerLost() {
    this._checkLocal("peerLost");
    if (this.isFinished) return;
    this._linkDown = true;
    this._resyncOwed = true;
  }

  /** The pair is whole again: send resume_hello (once per cut). */
  async resumed() {
    this._checkLocal("resumed");
    if (this.isFinished) return;
    this._linkDown = false;
    if (!this._resyncOwed || this._awaitingHello) return;
    await this._sendResumeHello();
  }

  // ---------------------------------------------------------------- inputs: the person

  /**
   * S: offer a file, once the keys are confirmed.
   * @param {{fileId: Bytes, name: string, size: number, type: string, lastModified: number}} file
   */
  async offer(file) {
    this._checkLocal("offer");
    if (file.fileId.length !== FILE_ID_LENGTH) throw new RangeError("file_id must be 16 bytes");
    if (!(Number.isSafeInteger(file.size) && file.size >= 0 && file.size <= MAX_SIZE)) {
      throw new RangeError(`size must be 0..${MAX_SIZE}`);
    }
    if (!(Number.isSafeInteger(file.lastModified) && file.lastModified >= 0)) {
      throw new RangeError("lastModified must be a non-negative integer (ms)");
    }
    if ([...file.name].length > MAX_NAME_CHARS || [...file.type].length > MAX_TYPE_CHARS) {
      throw new RangeError("name or type too long");
    }
    /** @type {Offer} */
    const offer = { ...file, chunks: chunkCount(file.size) };
    // A resume re-sends the offer with a larger epoch: check that the largest one fits.
    ctrlPlaintext(offerMessage(offer, U32_MAX, new Uint8Array(NONCE_LENGTH)));
    if (!this._streamNonce.length) this._streamNonce = this._rng(NONCE_LENGTH);
    this.offerInfo = offer;
    await this._sendCtrl(this._offerMessage());
    this.state = "offered";
  }

  /** S: true if chunk nextChunkWanted() may be sent now (credit window). */
  canSendChunk() {
    if (this.role !== "send" || this.state !== "transfer" || this.offerInfo === null) return false;
    if (this._linkDown || this._awaitingHello || this._awaitAck) return false;
    const index = this._nextIndex;
    return index < this.offerInfo.chunks && index <= this.through + this._window;
  }

  /** S: the index of the next chunk to send. */
  nextChunkWanted() {
    return this._nextIndex;
  }

  /**
   * S: seal chunk `index` into a DATA frame.
   * @param {number} index
   * @param {Bytes} plaintext
   */
  async sendChunk(index, plaintext) {
    this._checkLocal("sendChunk");
    if (index !== this._nextIndex || !this.canSendChunk()) {
      throw new PeerStateError(`chunk ${index} may not be sent now`);
    }
    const offer = /** @type {Offer} */ (this.offerInfo);
    if (plaintext.length !== expectedLength(offer.size, index)) {
      throw new RangeError(`chunk ${index} must be ${expectedLength(offer.size, index)} bytes`);
    }
    const key = /** @type {CryptoKey} */ (this._dataKey);
    this._nextIndex = index + 1;
    this._out.push(await sealChunk(key, offer.fileId, this._epoch, index, offer.size, plaintext));
  }

  /**
   * R: accept the offer; `resumeFrom` = chunks already held.
   * @param {number} [resumeFrom]
   * @param {number} [window]
   */
  async acceptOffer(resumeFrom = 0, window = DEFAULT_WINDOW) {
    this._checkLocal("acceptOffer");
    const chunks = /** @type {Offer} */ (this.offerInfo).chunks;
    if (!(resumeFrom >= 0 && resumeFrom <= chunks)) throw new RangeError(`resumeFrom must be 0..${chunks}`);
    if (!(window >= 1 && window <= MAX_WINDOW)) throw new RangeError(`window must be 1..${MAX_WINDOW}`);
    this._window = window;
    await this._sendCtrl({ t: "accept", resume_from: resumeFrom, window });
    this._received = this._written = this._acked = resumeFrom - 1;
    await this._startStreamAt(resumeFrom);
  }

  /** R: refuse the offer. */
  async decline() {
    this._checkLocal("decline");
    await this._sendCtrl({ t: "cancel", reason: "declined" });
    this._end("cancelled", "happy");
  }

  /**
   * R: chunk `index` (the oldest not yet reported) is written: ack it.
   * @param {number} index
   */
  async chunkWritten(index) {
    this._checkLocal("chunkWritten");
    if (index !== this._written + 1 || index > this._received) {
      throw new PeerStateError(`chunk ${index} is not the next chunk received`);
    }
    this._written = index;
    if (index > this._acked) {
      this._acked = index;
      await this._sendCtrl({ t: "ack", through: index, window: this._window });
    }
  }

  /** R: every chunk is written and the file is in place: send done. */
  async complete() {
    this._checkLocal("complete");
    if (this._written !== /** @type {Offer} */ (this.offerInfo).chunks - 1) {
      throw new PeerStateError("complete() before every chunk was written");
    }
    await this._sendCtrl({ t: "done" });
    this._events.push({ type: "done" });
    this._end("done", "happy");
  }

  /**
   * Either side: abandon the transfer and tell the peer.
   * @param {string} [reason]
   */
  async cancel(reason = "cancelled") {
    this._checkLocal("cancel");
    await this._sendCtrl({ t: "cancel", reason: reason.slice(0, MAX_REASON_CHARS) });
    this._end("cancelled", "errory");
  }

  // ---------------------------------------------------------------- dispatch

  /** @param {string} action */
  _checkLocal(action) {
    if (!LOCAL[action].has(`${this.role}/${this.state}`)) {
      throw new PeerStateError(`${action}() is not allowed in state ${this.state}`);
    }
  }

  /** @param {string} name */
  _expect(name) {
    if (!ACCEPTS[`${this.role}/${this.state}`]?.has(name)) {
      throw new ProtocolViolation(`unexpected ${name} in state ${this.state}`);
    }
  }

  /** @param {Bytes} frame */
  async _receive(frame) {
    if (!frame.length) throw new ProtocolViolation("empty E2E frame");
    const kind = frame[0];
    if (kind === SEALED_CTRL) return this._receiveCtrl(frame);
    const name = FRAME_NAMES[kind];
    if (name === undefined) throw new ProtocolViolation(`unknown frame type 0x${kind.toString(16)}`);
    if (this._awaitingHello && name === "DATA") return; // stale DATA from before the cut
    this._expect(name);
    if (name === "COMMIT") return this._onCommit(frame);
    if (name === "CPACE") return this._onCpace(frame);
    if (name === "CONFIRM") return this._onConfirm(frame);
    return this._onData(frame);
  }

  /** @param {Bytes} frame */
  async _receiveCtrl(frame) {
    if (this._opener === null) throw new ProtocolViolation(`unexpected SEALED_CTRL in state ${this.state}`);
    const previous = this._opener.last;
    const message = await this._opener.open(frame);
    const name = message.t;
    if (name === "resume_hello") {
      this._expect(name);
      return this._onResumeHello(message);
    }
    if (this._awaitingHello) return; // stale, from before the cut; the peer re-sends if needed
    if (this._opener.last !== previous + 1) {
      throw new IntegrityError(`control counter ${this._opener.last} after ${previous}`);
    }
    this._expect(name);
    this._rxProcessed = this._opener.last;
    if (name === "offer") return this._onOffer(message);
    if (name === "accept") return this._onAccept(message);
    if (name === "ack") return this._onAck(message);
    if (name === "done") return this._onDone();
    return this._onCancel(message);
  }

  // ---------------------------------------------------------------- key exchange

  /** @param {Bytes} frame */
  async _onCommit(frame) {
    if (frame.length !== 33) throw new ProtocolViolation("a COMMIT body is 32 bytes");
    this._commit = frame.slice(1);
    const cpace = /** @type {CPace} */ (this._cpace);
    this._out.push(Uint8Array.of(CPACE, ...cpace.message));
    this.state = "wait_cpace";
  }

  /** @param {Bytes} frame */
  async _onCpace(frame) {
    const body = frame.slice(1);
    const cpace = /** @type {CPace} */ (this._cpace);
    if (this.role === "recv" && !(await matchesCommitment(body, this._commit))) {
      throw new WrongCode(); // S's message is not the one it committed to
    }
    const isk = await cpace.finish(body);
    const keys = await deriveKeys(isk, this._sid);
    isk.fill(0);
    this._keys = keys;
    this._transcript = /** @type {Bytes} */ (cpace.transcript);
    let tag;
    if (this.role === "send") {
      this._out.push(Uint8Array.of(CPACE, ...cpace.message));
      this._ownCtrlKey = keys.ctrlS2R;
      this._peerCtrlKey = keys.ctrlR2S;
      tag = await confirmTag(keys.confirmS, this._transcript);
    } else {
      this._ownCtrlKey = keys.ctrlR2S;
      this._peerCtrlKey = keys.ctrlS2R;
      tag = await confirmTag(keys.confirmR, this._transcript);
    }
    this._out.push(Uint8Array.of(CONFIRM, ...tag));
    this.state = "wait_confirm";
  }

  /** @param {Bytes} frame */
  async _onConfirm(frame) {
    if (frame.length !== 33) throw new ProtocolViolation("a CONFIRM body is 32 bytes");
    const keys = /** @type {import("tube/keys.js").SessionKeys} */ (this._keys);
    await checkConfirm(this.role === "send" ? keys.confirmR : keys.confirmS, this._transcript, frame.slice(1));
    this._cpace = null;
    this._opener = new CtrlOpener(/** @type {CryptoKey} */ (this._peerCtrlKey));
    this.state = "ready";
    this._events.push({ type: "verified", verifier: keys.verifier });
    this._out.push(relayText({ t: "resumable", rid: b64u(keys.rid) }));
  }

  // ---------------------------------------------------------------- control messages

  /** @param {Record<string, any>} message */
  async _sendCtrl(message) {
    const counter = this._txCounter;
    this._txCounter += 1;
    if (IMPORTANT.has(message.t)) this._sentImportant.push([counter, message]);
    this._out.push(await sealCtrl(/** @type {CryptoKey} */ (this._ownCtrlKey), counter, message));
  }

  _offerMessage() {
    return offerMessage(/** @type {Offer} */ (this.offerInfo), this._epoch, this._streamNonce);
  }

  /** @param {Record<string, any>} message R, ready */
  _onOffer(message) {
    const fileId = b64Field(message.file_id, FILE_ID_LENGTH, "offer.file_id");
    const name = str(message, "name", MAX_NAME_CHARS);
    const size = int(message, "size", 0, MAX_SIZE);
    const type = str(message, "type", MAX_TYPE_CHARS);
    const lastModified = int(message, "lastModified", 0, Number.MAX_SAFE_INTEGER);
    int(message, "chunk", CHUNK_SIZE, CHUNK_SIZE);
    int(message, "epoch", this._epoch, this._epoch);
    this._streamNonce = b64Field(message.nonce, NONCE_LENGTH, "offer.nonce");
    this.offerInfo = { fileId, name, size, type, lastModified, chunks: chunkCount(size) };
    this.state = "offered";
    this._events.push({ type: "offer", offer: this.offerInfo });
  }

  /** @param {Record<string, any>} message S, offered */
  async _onAccept(message) {
    const offer = /** @type {Offer} */ (this.offerInfo);
    const resumeFrom = int(message, "resume_from", 0, offer.chunks);
    this._window = int(message, "window", 1, MAX_WINDOW);
    this.through = resumeFrom - 1;
    await this._startStreamAt(resumeFrom);
    this._events.push({ type: "accepted", resumeFrom, window: this._window });
  }

  /** @param {Record<string, any>} message S, transfer */
  _onAck(message) {
    const through = int(message, "through", this.through, this._nextIndex - 1);
    this._window = int(message, "window", 1, MAX_WINDOW);
    this.through = through;
    if (this._awaitAck) {
      // The first ack after a resync says where R's new stream starts.
      this._awaitAck = false;
      this._nextIndex = through + 1;
    }
    this._events.push({ type: "progress", through });
  }

  _onDone() {
    const offer = /** @type {Offer} */ (this.offerInfo);
    if (this._nextIndex < offer.chunks || this._awaitAck) {
      throw new ProtocolViolation("done before every chunk was sent");
    }
    this.through = offer.chunks - 1;
    this._events.push({ type: "done" });
    this._end("done", "happy");
  }

  /** @param {Record<string, any>} message */
  _onCancel(message) {
    const reason = str(message, "reason", MAX_REASON_CHARS);
    this._events.push({ type: "cancelled", reason });
    this._end("cancelled", reason === "declined" ? "happy" : "errory");
  }

  // ---------------------------------------------------------------- the stream

  /** @param {number} index enter transfer (or finishing for R when nothing is left) */
  async _startStreamAt(index) {
    const offer = /** @type {Offer} */ (this.offerInfo);
    const keys = /** @type {import("tube/keys.js").SessionKeys} */ (this._keys);
    this._dataKey = await keys.dataKey(offer.fileId, this._epoch, this._streamNonce);
    if (this.role === "send") {
      this._nextIndex = index;
      this.state = "transfer";
    } else if (index >= offer.chunks) {
      this._chunks = null;
      this.state = "finishing";
    } else {
      this._chunks = new ChunkOpener(this._dataKey, offer.fileId, this._epoch, offer.size, index);
      this.state = "transfer";
    }
  }

  /** @param {Bytes} frame R, transfer */
  async _onData(frame) {
    const chunks = /** @type {ChunkOpener} */ (this._chunks);
    const index = chunks.nextIndex;
    const plaintext = await chunks.open(frame);
    this._received = index;
    if (chunks.done) this.state = "finishing";
    this._events.push({ type: "chunk", index, plaintext, final: chunks.done });
  }

  // ---------------------------------------------------------------- resume

  async _sendResumeHello() {
    const nonce = this._rng(NONCE_LENGTH);
    if (this.role === "send") this._streamNonce = nonce;
    await this._sendCtrl({ t: "resume_hello", epoch: this._epoch, nonce: b64u(nonce), rx: this._rxProcessed });
    this._awaitingHello = true;
  }

  /** @param {Record<string, any>} message */
  async _onResumeHello(message) {
    const peerEpoch = int(message, "epoch", 0, U32_MAX - 1);
    const nonce = b64Field(message.nonce, NONCE_LENGTH, "resume_hello.nonce");
    const rx = int(message, "rx", -1, this._txCounter - 1);
    if (!this._awaitingHello) {
      // The peer resumed first: answer before anything else.
      await this._sendResumeHello();
    }
    this._awaitingHello = false;
    this._resyncOwed = false;
    this._rxProcessed = this._opener ? this._opener.last : -1;
    this._epoch = Math.max(this._epoch, peerEpoch) + 1;
    if (this.role === "recv") this._streamNonce = nonce;
    // Re-send what the peer may have missed, with new counters.
    const missed = this._sentImportant.filter(([counter]) => counter > rx).map(([, m]) => m);
    this._sentImportant = this._sentImportant.filter(([counter]) => counter <= rx);
    for (const lost of missed) await this._sendCtrl(lost.t === "offer" ? this._offerMessage() : lost);
    const offer = this.offerInfo;
    if (offer !== null && (this.state === "transfer" || this.state === "finishing")) {
      const keys = /** @type {import("tube/keys.js").SessionKeys} */ (this._keys);
      this._dataKey = await keys.dataKey(offer.fileId, this._epoch, this._streamNonce);
      if (this.role === "send") {
        this._awaitAck = true;
      } else {
        const start = this._received + 1;
        if (start < offer.chunks) {
          this._chunks = new ChunkOpener(this._dataKey, offer.fileId, this._epoch, offer.size, start);
        }
        this._acked = Math.max(this._acked, this._received);
        await this._sendCtrl({ t: "ack", through: this._received, window: this._window });
      }
    }
    this._events.push({ type: "resynced", epoch: this._epoch });
  }

  // ---------------------------------------------------------------- endings

  /** @param {State} state @param {string} mood */
  _end(state, mood) {
    this.state = state;
    this._out.push(relayText({ t: "bye", mood }));
  }

  /** @param {E2EError} error */
  async _fail(error) {
    this._events.push({ type: "failed", error });
    if (SESSION.includes(this.state)) {
      // The keys are confirmed, so the sealed channel is ours to speak on: say why before the
      // bye, or the peer only learns that we left. Only the kind of failure, never its details.
      const reason = error instanceof IntegrityError ? CANCEL_INTEGRITY : CANCEL_PROTOCOL;
      await this._sendCtrl({ t: "cancel", reason });
    }
    this._end("failed", error instanceof WrongCode ? "scary" : "errory");
  }
}
