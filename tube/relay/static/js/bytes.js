// @ts-check
/**
 * Byte helpers shared by the page's modules: hex, unpadded base64url, UTF-8, big-endian
 * integers and concatenation. No state, no I/O.
 * @module
 */

/** Bytes in a plain ArrayBuffer, as WebCrypto takes them. @typedef {Uint8Array<ArrayBuffer>} Bytes */

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/**
 * UTF-8 bytes of a string.
 * @param {string} text
 * @returns {Bytes}
 */
export function utf8(text) {
  return encoder.encode(text);
}

/**
 * Decode UTF-8, throwing on invalid bytes (a peer's JSON must be valid UTF-8, as in Python).
 * @param {Bytes} bytes
 * @returns {string}
 */
export function fromUtf8(bytes) {
  return strictDecoder.decode(bytes);
}

/**
 * Lower-case hex of some bytes.
 * @param {Bytes} bytes
 * @returns {string}
 */
export function toHex(bytes) {
  let out = "";
  for (const byte of bytes) out += byte.toString(16).padStart(2, "0");
  return out;
}

/**
 * Bytes of a hex string (even length, no prefix).
 * @param {string} hex
 * @returns {Bytes}
 */
export function fromHex(hex) {
  if (hex.length % 2 !== 0 || /[^0-9a-fA-F]/.test(hex)) throw new Error("not hex");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * Concatenate byte arrays into a new one.
 * @param {...Bytes} parts
 * @returns {Bytes}
 */
export function concat(...parts) {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * Unpadded base64url, as every binary field of the protocol is written.
 * @param {Bytes} bytes
 * @returns {string}
 */
export function b64u(bytes) {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * Decode canonical unpadded base64url of exactly `length` bytes, or return null.
 * Canonical: re-encoding gives the same text (the unused low bits of the last character are
 * zero), so one value has one spelling, as the Python peer requires.
 * @param {unknown} text
 * @param {number} length
 * @returns {Bytes | null}
 */
export function b64uDecode(text, length) {
  if (typeof text !== "string" || text.length !== Math.ceil((length * 4) / 3)) return null;
  if (/[^A-Za-z0-9_-]/.test(text)) return null;
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  let binary;
  try {
    binary = atob(padded);
  } catch {
    return null;
  }
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  if (out.length !== length || b64u(out) !== text) return null;
  return out;
}

/**
 * A u32 as 4 big-endian bytes.
 * @param {number} value
 * @returns {Bytes}
 */
export function u32be(value) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

/**
 * A u64 as 8 big-endian bytes. Numbers are exact up to 2^53, more than any index or size of
 * the protocol (64 GiB, 262,144 chunks).
 * @param {number} value
 * @returns {Bytes}
 */
export function u64be(value) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(value));
  return out;
}

/**
 * Read a big-endian u64 at `offset` (as a number; values above 2^53 are refused).
 * @param {Bytes} bytes
 * @param {number} offset
 * @returns {number}
 */
export function readU64(bytes, offset) {
  const value = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(offset);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) return Number.MAX_SAFE_INTEGER;
  return Number(value);
}

/**
 * Constant-time comparison of two byte arrays of public length.
 * @param {Bytes} a
 * @param {Bytes} b
 * @returns {boolean}
 */
export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/**
 * A fresh copy of some random bytes from the browser's CSPRNG.
 * @param {number} length
 * @returns {Bytes}
 */
export function randomBytes(length) {
  return crypto.getRandomValues(new Uint8Array(length));
}
