// @ts-check
/**
 * CPace-X25519-SHA512 (draft-irtf-cfrg-cpace), the PAKE that turns the short code into a key,
 * byte for byte as `tube/relay/e2e/cpace.py` (design §4.1, §4.2).
 *
 * WebCrypto does both scalar multiplications: the generator is imported as a raw X25519
 * public key and `deriveBits` multiplies it by our (non-extractable) scalar. Elligator2 and the
 * decoding of the hash into a field element are BigInt arithmetic here, written straight-line
 * after the draft's appendix (fixed-exponent powers, no branch on secret values). BigInt is not
 * constant-time: one timing sample per single-use code leaks, inside network and JIT noise
 * (listed in docs/relay.md). The all-zero K check is done here, whatever the browser does.
 * @module
 */

/** @typedef {import("tube/bytes.js").Bytes} Bytes */
import { concat, utf8 } from "tube/bytes.js";
import { ProtocolViolation, WrongCode } from "tube/errors.js";

/** Domain-separation identifier of G_X25519. */
export const DSI = utf8("CPace255");
/** Channel identifier of TRP/1. */
export const CI = utf8("tube/1");
export const VERSION = 1;
export const ROLE_SEND = 0x53; // "S"
export const ROLE_RECV = 0x52; // "R"

// Curve25519 over GF(p), p = 2^255 - 19, Montgomery coefficient A (RFC 7748 §4.1).
const P = (1n << 255n) - 19n;
const A = 486662n;
const Z = 2n; // Elligator2's non-square for Curve25519 (RFC 9380, the draft's find_z_ell2)
const INVERT = P - 2n; // Fermat inversion, a fixed exponent
const LEGENDRE = (P - 1n) / 2n; // Euler's criterion
// A/2 mod p ((p + 1)/2 is the inverse of 2), for x = eps*v - (1 - eps)*A/2.
const HALF_A = (A * ((P + 1n) / 2n)) % P;
const FIELD_BYTES = 32;
// A CPACE body: LEB128(32) ‖ Y(32) ‖ LEB128(2) ‖ AD(2).
const MESSAGE_LENGTH = 1 + FIELD_BYTES + 1 + 2;
// PKCS#8 prefix of an X25519 private key (RFC 8410): tests import the draft's scalars with it.
const PKCS8_PREFIX = Uint8Array.from([
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
]);

/**
 * `data` prefixed with its length as LEB128 (the draft's prepend_len).
 * @param {Bytes} data
 * @returns {Bytes}
 */
export function prependLen(data) {
  /** @type {number[]} */
  const encoded = [];
  let length = data.length;
  do {
    encoded.push(length < 128 ? length : (length & 0x7f) | 0x80);
    length >>>= 7;
  } while (length !== 0);
  return concat(Uint8Array.from(encoded), data);
}

/**
 * Each part prefixed with its LEB128 length, concatenated (the draft's lv_cat).
 * @param {...Bytes} parts
 * @returns {Bytes}
 */
export function lvCat(...parts) {
  return concat(...parts.map(prependLen));
}

/**
 * `lv_cat(DSI, PRS, zero_bytes(len_zpad), CI, sid)`: DSI and a short PRS fill SHA-512's first
 * 128-byte block, so the work does not depend on the password's length.
 * @param {Bytes} prs
 * @param {Bytes} ci
 * @param {Bytes} sid
 * @returns {Bytes}
 */
export function generatorString(prs, ci, sid) {
  const zpad = Math.max(0, 128 - prependLen(prs).length - prependLen(DSI).length - 1);
  return lvCat(DSI, prs, new Uint8Array(zpad), ci, sid);
}

/**
 * Little-endian bytes to an integer with the top bit cleared (RFC 7748 decodeUCoordinate).
 * @param {Bytes} bytes 32 bytes
 * @returns {bigint}
 */
export function decodeUCoordinate(bytes) {
  let value = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]);
  return value & ((1n << 255n) - 1n);
}

/**
 * An integer in [0, 2^256) as 32 little-endian bytes.
 * @param {bigint} value
 * @returns {Bytes}
 */
export function encodeUCoordinate(value) {
  const out = new Uint8Array(FIELD_BYTES);
  for (let i = 0; i < FIELD_BYTES; i++) {
    out[i] = Number(value & 0xffn);
    value >>= 8n;
  }
  return out;
}

/**
 * `base^exponent mod P` by square-and-multiply over every bit of the (public, fixed) exponent.
 * @param {bigint} base
 * @param {bigint} exponent
 * @returns {bigint}
 */
function power(base, exponent) {
  let result = 1n;
  base %= P;
  while (exponent > 0n) {
    if (exponent & 1n) result = (result * base) % P;
    base = (base * base) % P;
    exponent >>= 1n;
  }
  return result;
}

/**
 * Map a field element to the u-coordinate of a Curve25519 point (Elligator2, Z = 2):
 * `v = -A / (1 + Z r^2)`, `eps = (v^3 + A v^2 + v)^((p-1)/2)`, `x = eps v - (1 - eps) A/2`.
 * Straight-line: the choice between v and -v - A is arithmetic on eps, not a branch.
 * @param {bigint} r
 * @returns {bigint} in [0, p)
 */
export function elligator2(r) {
  r %= P;
  const denominator = (1n + Z * r * r) % P;
  const v = (((-A * power(denominator, INVERT)) % P) + P) % P;
  const gx = (v * ((v * (v + A) + 1n) % P)) % P;
  // 1 or p - 1 (that is, -1 mod p): used as is, the formula needs no branch on it.
  const eps = power(gx, LEGENDRE);
  return (((eps * v - (1n - eps) * HALF_A) % P) + P) % P;
}

/**
 * The session's generator: Elligator2 of SHA-512(generator string)[0:32], 32 bytes LE.
 * @param {Bytes} prs
 * @param {Bytes} ci
 * @param {Bytes} sid
 * @returns {Promise<Bytes>}
 */
export async function calculateGenerator(prs, ci, sid) {
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-512", generatorString(prs, ci, sid)));
  return encodeUCoordinate(elligator2(decodeUCoordinate(hash.subarray(0, FIELD_BYTES))));
}

/**
 * True if WebCrypto has X25519 (Chrome 133, Firefox 130, Safari 17); the page says so
 * otherwise instead of failing obscurely.
 * @returns {Promise<boolean>}
 */
export async function hasX25519() {
  try {
    if (!globalThis.crypto || !crypto.subtle) return false;
    await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
    return true;
  } catch {
    return false;
  }
}

/**
 * Import a 32-byte scalar as an X25519 private key (tests: the draft's fixed scalars).
 * @param {Bytes} scalar
 * @returns {Promise<CryptoKey>}
 */
export function importScalar(scalar) {
  return crypto.subtle.importKey("pkcs8", concat(PKCS8_PREFIX, scalar), { name: "X25519" }, false, [
    "deriveBits",
  ]);
}

/**
 * A fresh, non-extractable X25519 scalar.
 * @returns {Promise<CryptoKey>}
 */
export async function newScalar() {
  const pair = /** @type {CryptoKeyPair} */ (
    await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"])
  );
  return pair.privateKey;
}

/**
 * X25519(scalar, point), aborting on the neutral element (the draft's scalar_mult_vfy).
 * Bit 255 of the point is masked first, as RFC 7748 §5 requires. A browser that throws on a
 * low-order point (Chromium's OperationError) and an all-zero result we see ourselves are the
 * same abort: WrongCode.
 * @param {CryptoKey} scalar
 * @param {Bytes} point 32 bytes
 * @returns {Promise<Bytes>}
 */
export async function scalarMultVfy(scalar, point) {
  if (point.length !== FIELD_BYTES) throw new Error("X25519 points are 32 bytes");
  const masked = Uint8Array.from(point);
  masked[31] &= 0x7f;
  let result;
  try {
    const peer = await crypto.subtle.importKey("raw", masked, { name: "X25519" }, true, []);
    result = new Uint8Array(
      await crypto.subtle.deriveBits({ name: "X25519", public: peer }, scalar, 256),
    );
  } catch {
    throw new WrongCode();
  }
  // Our own check, whatever the browser does (Firefox's tests mark its own check as failing).
  let any = 0;
  for (const byte of result) any |= byte;
  if (any === 0) throw new WrongCode();
  return result;
}

/**
 * Split a CPACE body into [Y, AD], accepting exactly one encoding and nothing after it.
 * @param {Bytes} message
 * @returns {[Bytes, Bytes]}
 */
function parseMessage(message) {
  if (
    message.length !== MESSAGE_LENGTH ||
    message[0] !== FIELD_BYTES ||
    message[1 + FIELD_BYTES] !== 2
  ) {
    throw new ProtocolViolation("a CPACE message is lv_cat(32-byte Y, 2-byte AD)");
  }
  return [message.subarray(1, 1 + FIELD_BYTES), message.subarray(2 + FIELD_BYTES)];
}

/** One party's run of CPace; build it with {@link CPace.start}. */
export class CPace {
  /**
   * @param {"send" | "recv"} role
   * @param {Bytes} sid
   * @param {CryptoKey} scalar
   * @param {Bytes} message our CPACE body lv_cat(Y, AD)
   */
  constructor(role, sid, scalar, message) {
    this.role = role;
    this.sid = sid;
    /** @type {CryptoKey | null} dropped after finish(): forward secrecy */
    this.scalar = scalar;
    /** Our CPACE body, sent in a CPACE frame (and committed to by S). */
    this.message = message;
    /** @type {Bytes | null} */
    this.transcript = null;
  }

  /**
   * Start a run: compute the generator and Y = X25519(y, g).
   * @param {Bytes} prs UTF-8 of the normalised code
   * @param {Bytes} sid the relay's 16-byte pair_id
   * @param {"send" | "recv"} role
   * @param {{ci?: Bytes, scalar?: CryptoKey}} [options] tests only
   * @returns {Promise<CPace>}
   */
  static async start(prs, sid, role, options = {}) {
    const scalar = options.scalar ?? (await newScalar());
    const g = await calculateGenerator(prs, options.ci ?? CI, sid);
    const y = await scalarMultVfy(scalar, g);
    const ad = Uint8Array.from([role === "send" ? ROLE_SEND : ROLE_RECV, VERSION]);
    return new CPace(role, sid, scalar, lvCat(y, ad));
  }

  /**
   * Check the peer's CPACE body and return the 64-byte ISK.
   * @param {Bytes} peerMessage
   * @returns {Promise<Bytes>}
   */
  async finish(peerMessage) {
    if (this.scalar === null) throw new Error("finish() already succeeded");
    const [peerY, peerAd] = parseMessage(peerMessage);
    const own = this.role === "send" ? ROLE_SEND : ROLE_RECV;
    const expected = this.role === "send" ? ROLE_RECV : ROLE_SEND;
    if (peerAd[0] !== expected) {
      if (peerAd[0] === own) throw new ProtocolViolation("the peer's CPACE message carries our own role");
      throw new ProtocolViolation(`unknown role byte 0x${peerAd[0].toString(16)} in CPACE`);
    }
    if (peerAd[1] !== VERSION) throw new ProtocolViolation(`CPACE version ${peerAd[1]}, expected 1`);
    const k = await scalarMultVfy(this.scalar, peerY);
    // The sender is always the initiator of the transcript, whatever the arrival order.
    const transcript =
      this.role === "send" ? concat(this.message, peerMessage) : concat(peerMessage, this.message);
    const isk = new Uint8Array(
      await crypto.subtle.digest("SHA-512", concat(lvCat(utf8("CPace255_ISK"), this.sid, k), transcript)),
    );
    k.fill(0);
    this.scalar = null;
    this.transcript = transcript;
    return isk;
  }
}
