// @ts-check
/**
 * The end-to-end frames (design §4.4, §5.7), as `tube/relay/e2e/framing.py`: DATA chunks
 * (AES-256-GCM, nonce 4 zero bytes ‖ u64 index, 48-byte AAD binding file, epoch, index, final
 * flag and size) and sealed control messages (JSON padded to 256 bytes, counter nonces).
 * @module
 */

/** @typedef {import("tube/bytes.js").Bytes} Bytes */
import { concat, fromUtf8, readU64, u32be, u64be, utf8 } from "tube/bytes.js";
import { IntegrityError, ProtocolViolation } from "tube/errors.js";

export const CPACE = 0x01;
export const CONFIRM = 0x02;
export const SEALED_CTRL = 0x03;
export const COMMIT = 0x04;
export const DATA = 0x10;

/** Plaintext bytes per DATA chunk (256 KiB, the fastest size measured in Chromium). */
export const CHUNK_SIZE = 262144;
/** Chunks per transfer: 64 GiB. */
export const MAX_CHUNKS = 262144;
/** Largest file a v1 transfer may offer, in bytes. */
export const MAX_SIZE = CHUNK_SIZE * MAX_CHUNKS;
/** Control JSON is padded with spaces to a multiple of this (hides the name's length). */
export const CTRL_BUCKET = 256;
export const MAX_CTRL_PLAINTEXT = 4096;

const TAG_LENGTH = 16;
const HEADER = 9; // type byte ‖ u64 index or counter
const DATA_LABEL = utf8("tube/1 data");
const CTRL_AAD = utf8("tube/1 ctrl");

/**
 * The number of chunks of a file: max(1, ceil(size / 256 KiB)); an empty file is one empty
 * final chunk.
 * @param {number} size
 * @returns {number}
 */
export function chunkCount(size) {
  if (!(Number.isSafeInteger(size) && size >= 0 && size <= MAX_SIZE)) {
    throw new RangeError(`size must be 0..${MAX_SIZE} bytes`);
  }
  return Math.max(1, Math.ceil(size / CHUNK_SIZE));
}

/**
 * The plaintext length of chunk `index` of a `size`-byte file.
 * @param {number} size
 * @param {number} index
 * @returns {number}
 */
export function expectedLength(size, index) {
  const count = chunkCount(size);
  if (!(index >= 0 && index < count)) throw new RangeError(`chunk index must be 0..${count - 1}`);
  return index < count - 1 ? CHUNK_SIZE : size - (count - 1) * CHUNK_SIZE;
}

/**
 * The 48-byte AAD of a DATA chunk: label ‖ file_id ‖ u32 epoch ‖ u64 index ‖ u8 final ‖ u64 size.
 * @param {Bytes} fileId
 * @param {number} epoch
 * @param {number} index
 * @param {boolean} final
 * @param {number} totalSize
 * @returns {Bytes}
 */
export function dataAad(fileId, epoch, index, final, totalSize) {
  if (fileId.length !== 16) throw new RangeError("file_id must be 16 bytes");
  return concat(DATA_LABEL, fileId, u32be(epoch), u64be(index), Uint8Array.of(final ? 1 : 0), u64be(totalSize));
}

/**
 * 4 zero bytes ‖ u64 big-endian counter: the 96-bit GCM nonce.
 * @param {number} counter
 * @returns {Bytes}
 */
function nonce(counter) {
  return concat(new Uint8Array(4), u64be(counter));
}

/**
 * @param {number} type
 * @param {number} counter
 * @returns {Bytes}
 */
function header(type, counter) {
  return concat(Uint8Array.of(type), u64be(counter));
}

/**
 * The whole DATA frame of chunk `index`; the final flag follows from index and size.
 * @param {CryptoKey} key
 * @param {Bytes} fileId
 * @param {number} epoch
 * @param {number} index
 * @param {number} totalSize
 * @param {Bytes} plaintext
 * @returns {Promise<Bytes>}
 */
export async function sealChunk(key, fileId, epoch, index, totalSize, plaintext) {
  const length = expectedLength(totalSize, index);
  if (plaintext.length !== length) throw new RangeError(`chunk ${index} must hold ${length} bytes`);
  const final = index === chunkCount(totalSize) - 1;
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce(index), additionalData: dataAad(fileId, epoch, index, final, totalSize) },
    key,
    plaintext,
  );
  // One allocation for the frame: the header, then the ciphertext and tag.
  const frame = new Uint8Array(HEADER + sealed.byteLength);
  frame.set(header(DATA, index));
  frame.set(new Uint8Array(sealed), HEADER);
  return frame;
}

/** Opens the DATA frames of one stream strictly in order, with the receiver's own counter. */
export class ChunkOpener {
  /**
   * @param {CryptoKey} key
   * @param {Bytes} fileId
   * @param {number} epoch
   * @param {number} totalSize
   * @param {number} [nextIndex] the first chunk expected
   */
  constructor(key, fileId, epoch, totalSize, nextIndex = 0) {
    this.count = chunkCount(totalSize);
    if (!(nextIndex >= 0 && nextIndex < this.count)) throw new RangeError("next index out of range");
    this.key = key;
    this.fileId = fileId;
    this.epoch = epoch;
    this.totalSize = totalSize;
    /** Index of the next chunk accepted. */
    this.nextIndex = nextIndex;
    /** True once the final chunk was authenticated: only then is the stream complete. */
    this.done = false;
  }

  /**
   * Authenticate and decrypt the next DATA frame. The wire index is only compared: nonce and
   * AAD come from our own counter, so a reordered chunk can never land in the wrong place.
   * @param {Bytes} frame
   * @returns {Promise<Bytes>}
   */
  async open(frame) {
    if (this.done) throw new IntegrityError("DATA after the final chunk");
    if (frame.length < HEADER + TAG_LENGTH) throw new IntegrityError("truncated DATA frame");
    if (frame[0] !== DATA) throw new IntegrityError(`expected a DATA frame, got type 0x${frame[0].toString(16)}`);
    const index = this.nextIndex;
    const wireIndex = readU64(frame, 1);
    if (wireIndex !== index) throw new IntegrityError(`expected chunk ${index}, got ${wireIndex}`);
    const length = expectedLength(this.totalSize, index);
    if (frame.length !== HEADER + length + TAG_LENGTH) {
      throw new IntegrityError(`chunk ${index} must hold ${length} bytes`);
    }
    const final = index === this.count - 1;
    let plaintext;
    try {
      plaintext = await crypto.subtle.decrypt(
        {
          name: "AES-GCM",
          iv: nonce(index),
          additionalData: dataAad(this.fileId, this.epoch, index, final, this.totalSize),
        },
        this.key,
        frame.subarray(HEADER),
      );
    } catch {
      throw new IntegrityError(`chunk ${index} failed authentication`);
    }
    this.nextIndex = index + 1;
    this.done = final;
    return new Uint8Array(plaintext);
  }
}

/**
 * The padded plaintext of a control message: compact UTF-8 JSON (as Python's
 * `json.dumps(separators=(",", ":"), ensure_ascii=False)`), spaces up to a multiple of 256.
 * @param {Record<string, unknown>} obj
 * @returns {Bytes}
 */
export function ctrlPlaintext(obj) {
  if (typeof obj.t !== "string") throw new TypeError('a control message needs a string "t"');
  const encoded = utf8(JSON.stringify(obj));
  const padded = Math.max(CTRL_BUCKET, Math.ceil(encoded.length / CTRL_BUCKET) * CTRL_BUCKET);
  if (padded > MAX_CTRL_PLAINTEXT) throw new RangeError("control message over 4096 bytes");
  const out = new Uint8Array(padded).fill(0x20);
  out.set(encoded);
  return out;
}

/**
 * The SEALED_CTRL frame 0x03 ‖ u64 counter ‖ AES-256-GCM(padded JSON).
 * @param {CryptoKey} key
 * @param {number} counter never repeated under one key
 * @param {Record<string, unknown>} obj
 * @returns {Promise<Bytes>}
 */
export async function sealCtrl(key, counter, obj) {
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce(counter), additionalData: CTRL_AAD },
    key,
    ctrlPlaintext(obj),
  );
  return concat(header(SEALED_CTRL, counter), new Uint8Array(sealed));
}

/** Opens one direction's control messages, each counter above the last. */
export class CtrlOpener {
  /** @param {CryptoKey} key */
  constructor(key) {
    this.key = key;
    /** The highest counter accepted so far. */
    this.last = -1;
  }

  /**
   * Authenticate, decrypt and parse the next SEALED_CTRL frame.
   * @param {Bytes} frame
   * @returns {Promise<Record<string, any>>}
   */
  async open(frame) {
    if (frame.length < HEADER + TAG_LENGTH) throw new IntegrityError("truncated SEALED_CTRL frame");
    if (frame[0] !== SEALED_CTRL) throw new IntegrityError("expected a SEALED_CTRL frame");
    const counter = readU64(frame, 1);
    if (counter <= this.last) throw new IntegrityError(`control counter ${counter} after ${this.last}: replay`);
    // Bound the work before decrypting.
    if (frame.length > HEADER + MAX_CTRL_PLAINTEXT + TAG_LENGTH) {
      throw new IntegrityError("sealed control message over 4096 bytes");
    }
    let plaintext;
    try {
      plaintext = new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv: nonce(counter), additionalData: CTRL_AAD },
          this.key,
          frame.subarray(HEADER),
        ),
      );
    } catch {
      throw new IntegrityError(`control message ${counter} failed authentication`);
    }
    // Authentic: the counter is spent even if the content turns out malformed.
    this.last = counter;
    return parseCtrl(plaintext);
  }
}

/**
 * Parse an authentic control plaintext: the padding rule, valid UTF-8, a JSON object with a
 * string "t", and no duplicate keys (JSON.parse keeps the last, Python's peer refuses them: the
 * two must never read one message differently). Our peers write compact JSON, so the text
 * must equal its own re-serialisation, which also rules duplicates out.
 * @param {Bytes} plaintext
 * @returns {Record<string, any>}
 */
function parseCtrl(plaintext) {
  if (plaintext.length < CTRL_BUCKET || plaintext.length % CTRL_BUCKET) {
    throw new ProtocolViolation("control plaintext not padded to a multiple of 256 bytes");
  }
  let obj;
  let text;
  try {
    text = fromUtf8(plaintext).replace(/ +$/, "");
    obj = JSON.parse(text);
  } catch (error) {
    throw new ProtocolViolation(`control message is not JSON: ${error}`);
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj) || typeof obj.t !== "string") {
    throw new ProtocolViolation('a control message is a JSON object with a string "t"');
  }
  if (JSON.stringify(obj) !== text) throw new ProtocolViolation("control message is not compact JSON");
  return obj;
}
