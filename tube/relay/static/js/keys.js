// @ts-check
/**
 * The key schedule after CPace, as `tube/relay/e2e/keys.py` (design §4.3): HKDF-SHA-256 with
 * salt = sid over ISK, every key `HKDF-Expand(PRK, "tube/1 " ‖ label, L)`; the CONFIRM tags,
 * S's commitment, the file id. WebCrypto keys are non-extractable; ISK lives on only as a
 * non-extractable HKDF key, for the per-stream data keys.
 * @module
 */

/** @typedef {import("tube/bytes.js").Bytes} Bytes */
import { concat, equalBytes, u32be, u64be, utf8 } from "tube/bytes.js";
import { lvCat } from "tube/cpace.js";
import { WrongCode } from "tube/errors.js";

const PREFIX = "tube/1 ";

/**
 * HMAC-SHA-256 of `data` under raw `key` bytes.
 * @param {Bytes} key
 * @param {Bytes} data
 * @returns {Promise<Bytes>}
 */
export async function hmacSha256(key, data) {
  const hmacKey = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", hmacKey, data));
}

/**
 * HKDF-Extract with SHA-256 (RFC 5869 §2.2), for the vectors: HMAC(salt, IKM).
 * @param {Bytes} salt
 * @param {Bytes} ikm
 * @returns {Promise<Bytes>}
 */
export function hkdfExtract(salt, ikm) {
  return hmacSha256(salt.length ? salt : new Uint8Array(32), ikm);
}

/**
 * HKDF-Expand with SHA-256 (RFC 5869 §2.3): `length` bytes (at most 8160).
 * @param {Bytes} prk
 * @param {Bytes} info
 * @param {number} length
 * @returns {Promise<Bytes>}
 */
export async function hkdfExpand(prk, info, length) {
  /** @type {Bytes[]} */
  const blocks = [];
  let block = new Uint8Array(0);
  for (let counter = 1, total = 0; total < length; counter++) {
    block = await hmacSha256(prk, concat(block, info, Uint8Array.of(counter)));
    blocks.push(block);
    total += block.length;
  }
  return concat(...blocks).slice(0, length);
}

/**
 * Extract-then-expand from a non-extractable HKDF key over ISK.
 * @param {CryptoKey} iskKey
 * @param {Bytes} sid
 * @param {Bytes} info
 * @param {number} length bytes
 * @returns {Promise<Bytes>}
 */
async function derive(iskKey, sid, info, length) {
  const bits = await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: sid, info },
    iskKey,
    length * 8,
  );
  return new Uint8Array(bits);
}

/**
 * @param {Bytes} raw
 * @returns {Promise<CryptoKey>}
 */
function aesKey(raw) {
  return crypto.subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

/**
 * @param {Bytes} raw
 * @returns {Promise<CryptoKey>}
 */
function hmacKey(raw) {
  return crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
    "verify",
  ]);
}

/**
 * Every key of one session (design §4.3), as CryptoKeys; raw bytes only in `raw` for tests.
 * @typedef {object} SessionKeys
 * @property {CryptoKey} confirmS HMAC key of the sender's CONFIRM tag
 * @property {CryptoKey} confirmR HMAC key of the receiver's CONFIRM tag
 * @property {CryptoKey} ctrlS2R AES-256-GCM key of control messages S → R
 * @property {CryptoKey} ctrlR2S AES-256-GCM key of control messages R → S
 * @property {Bytes} rid the 16-byte resume id told to the relay
 * @property {string} verifier six digits both people may compare
 * @property {(fileId: Bytes, epoch: number, nonce: Bytes) => Promise<CryptoKey>} dataKey
 *   the AES-256-GCM key of one DATA stream
 * @property {Record<string, Bytes>} [raw] the derived bytes (only when asked, for vectors)
 */

/**
 * Derive the session's keys from ISK and sid.
 * @param {Bytes} isk 64 bytes from CPace
 * @param {Bytes} sid the pair_id
 * @param {boolean} [keepRaw] keep the raw bytes (vector tests only)
 * @returns {Promise<SessionKeys>}
 */
export async function deriveKeys(isk, sid, keepRaw = false) {
  const iskKey = await crypto.subtle.importKey("raw", isk, "HKDF", false, ["deriveBits"]);
  /** @param {string} label @param {number} length */
  const expand = (label, length) => derive(iskKey, sid, utf8(PREFIX + label), length);
  const raw = {
    confirm_s: await expand("confirm_s", 32),
    confirm_r: await expand("confirm_r", 32),
    k_ctrl_s2r: await expand("k_ctrl_s2r", 32),
    k_ctrl_r2s: await expand("k_ctrl_r2s", 32),
    resume_secret: await expand("resume_secret", 32),
    verifier_bytes: await expand("verifier", 8),
  };
  const rid = await hkdfExpand(raw.resume_secret, utf8(PREFIX + "rid"), 16);
  const digits = new DataView(raw.verifier_bytes.buffer).getBigUint64(0) % 1000000n;
  const keys = {
    confirmS: await hmacKey(raw.confirm_s),
    confirmR: await hmacKey(raw.confirm_r),
    ctrlS2R: await aesKey(raw.k_ctrl_s2r),
    ctrlR2S: await aesKey(raw.k_ctrl_r2s),
    rid,
    verifier: digits.toString().padStart(6, "0"),
    /** @type {SessionKeys["dataKey"]} */
    dataKey: async (fileId, epoch, nonce) => {
      const info = concat(utf8(PREFIX + "k_data_s2r"), fileId, u32be(epoch), nonce);
      const bytes = await derive(iskKey, sid, info, 32);
      try {
        return await aesKey(bytes);
      } finally {
        bytes.fill(0);
      }
    },
  };
  if (keepRaw) return { ...keys, raw: { ...raw, rid } };
  for (const bytes of Object.values(raw)) bytes.fill(0);
  return keys;
}

/**
 * The CONFIRM tag HMAC-SHA-256(key, transcript).
 * @param {CryptoKey} key
 * @param {Bytes} transcript
 * @returns {Promise<Bytes>}
 */
export async function confirmTag(key, transcript) {
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, transcript));
}

/**
 * Verify the peer's CONFIRM tag (WebCrypto's verify compares in constant time).
 * @param {CryptoKey} key
 * @param {Bytes} transcript
 * @param {Bytes} tag
 * @returns {Promise<void>}
 */
export async function checkConfirm(key, transcript, tag) {
  if (!(await crypto.subtle.verify("HMAC", key, tag, transcript))) throw new WrongCode();
}

/**
 * S's commitment SHA-256("tube/1 commit" ‖ its CPACE body).
 * @param {Bytes} message
 * @returns {Promise<Bytes>}
 */
export async function commitment(message) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(utf8(PREFIX + "commit"), message)));
}

/**
 * True if `body` hashes to `commit` (compared in constant time).
 * @param {Bytes} body
 * @param {Bytes} commit
 * @returns {Promise<boolean>}
 */
export async function matchesCommitment(body, commit) {
  return equalBytes(await commitment(body), commit);
}

/**
 * A file's 16-byte id: SHA-256(lv_cat(salt, UTF-8 name, u64 size, u64 lastModified))[0:16].
 * @param {Bytes} salt
 * @param {string} name
 * @param {number} size
 * @param {number} lastModified milliseconds since 1970 (clamped to 0 by the caller)
 * @returns {Promise<Bytes>}
 */
export async function fileId(salt, name, size, lastModified) {
  const encoded = lvCat(salt, utf8(name), u64be(size), u64be(lastModified));
  return new Uint8Array(await crypto.subtle.digest("SHA-256", encoded)).slice(0, 16);
}
