// @ts-check
/**
 * Transfer codes, as `tube/relay/codes.py` (design §3): the EFF short word list #1 shipped with
 * the page, word codes `4821-ahead-zebra` (typed forgivingly: case, spaces, dashes and dots),
 * links `…/#4821.<22 base64url chars>` (a 128-bit secret, case-sensitive, never normalised),
 * and the list's one hyphenated word, `yo-yo`. The password (CPace's PRS) is the normalised
 * full code, nameplate included.
 * @module
 */

import { b64u, b64uDecode, randomBytes } from "tube/bytes.js";

export const MIN_WORDS = 2;
export const MAX_WORDS = 8;
const NAMEPLATE = /^[1-9][0-9]{2,7}$/;
const SECRET = /^[A-Za-z0-9_-]{22}$/;
const SEPARATORS = /[\s.-]+/;
const SCHEME = /^(?:https?|wss?):\/\//i;
const URL_FRAGMENT = /^(?:https?|wss?):\/\/[^#]*#([\s\S]*)$/i;

/** A code that cannot be right, with a message saying why. */
export class BadCode extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "BadCode";
  }
}

/**
 * A parsed code.
 * @typedef {object} ParsedCode
 * @property {string} nameplate the relay's routing number
 * @property {string} password CPace's PRS as text
 * @property {string[]} words the words ([] for a link)
 * @property {boolean} isLink
 */

/** The word list: the words in order, and a set for lookups. */
export class WordList {
  /** @param {string[]} words */
  constructor(words) {
    this.words = words;
    this.known = new Set(words);
  }

  /**
   * Fetch the list the relay serves, checked against its SRI hash.
   * @param {string} url
   * @param {string} integrity
   * @returns {Promise<WordList>}
   */
  static async load(url, integrity) {
    const response = await fetch(url, { integrity });
    if (!response.ok) throw new Error(`word list: HTTP ${response.status}`);
    return WordList.parse(await response.text());
  }

  /**
   * Plain words one per line, or the EFF's `1111<TAB>acid` lines.
   * @param {string} text
   * @returns {WordList}
   */
  static parse(text) {
    const words = text
      .split(/\r?\n/)
      .filter((line) => line.trim())
      .map((line) => /** @type {string} */ (line.split("\t").pop()).trim());
    return new WordList(words);
  }

  /**
   * `count` words drawn uniformly from the list (rejection sampling: no modulo bias).
   * @param {number} [count]
   * @returns {string[]}
   */
  generate(count = 2) {
    const n = this.words.length;
    const limit = 65536 - (65536 % n);
    /** @type {string[]} */
    const out = [];
    while (out.length < count) {
      const [value] = crypto.getRandomValues(new Uint16Array(1));
      if (value < limit) out.push(this.words[value % n]);
    }
    return out;
  }

  /**
   * Words that start with `prefix`, in list order, at most `limit`.
   * @param {string} prefix
   * @param {number} [limit]
   * @returns {string[]}
   */
  complete(prefix, limit = 8) {
    if (!prefix) return [];
    return this.words.filter((word) => word.startsWith(prefix)).slice(0, limit);
  }

  /**
   * Group tokens into list words (`yo` + `yo` → `yo-yo`); null if one is unknown.
   * @param {string[]} tokens
   * @returns {string[] | null}
   */
  splitWords(tokens) {
    /** @type {string[]} */
    const words = [];
    for (let i = 0; i < tokens.length; ) {
      if (this.known.has(tokens[i])) {
        words.push(tokens[i]);
        i += 1;
      } else if (i + 1 < tokens.length && this.known.has(`${tokens[i]}-${tokens[i + 1]}`)) {
        words.push(`${tokens[i]}-${tokens[i + 1]}`);
        i += 2;
      } else {
        return null;
      }
    }
    return words;
  }
}

/** @param {string} text */
export function isNameplate(text) {
  return NAMEPLATE.test(text);
}

/**
 * Lower-cased tokens of a typed code, split on runs of spaces, dashes and dots.
 * @param {string} text
 * @returns {string[]}
 */
export function tokens(text) {
  return text.trim().toLowerCase().split(SEPARATORS).filter(Boolean);
}

/**
 * [nameplate, secret] if `text` is `N.<22 base64url chars>` holding 16 bytes, else null.
 * @param {string} text
 * @returns {[string, string] | null}
 */
function linkParts(text) {
  const dot = text.indexOf(".");
  if (dot < 0) return null;
  const nameplate = text.slice(0, dot);
  const secret = text.slice(dot + 1);
  if (!isNameplate(nameplate) || !SECRET.test(secret) || b64uDecode(secret, 16) === null) return null;
  return [nameplate, secret];
}

/**
 * [nameplate, secret] if `text` is a link or `N.<secret>` (a secret that also reads as list
 * words is taken as words, as the Python side does), else null.
 * @param {WordList} list
 * @param {string} text
 * @returns {[string, string] | null}
 */
function link(list, text) {
  const url = URL_FRAGMENT.exec(text);
  if (url) return linkParts(url[1].trim());
  const parts = linkParts(text);
  if (parts !== null && list.splitWords(tokens(parts[1])) !== null) return null;
  return parts;
}

/**
 * Parse a code as typed or pasted: word code, `N.<secret>`, or a link.
 * @param {WordList} list
 * @param {string} text
 * @returns {ParsedCode}
 * @throws {BadCode} with a message a person can act on
 */
export function parseCode(list, text) {
  text = text.trim();
  const parts = link(list, text);
  if (parts !== null) {
    return { nameplate: parts[0], password: `${parts[0]}.${parts[1]}`, words: [], isLink: true };
  }
  if (SCHEME.test(text)) throw new BadCode("The link must end in #<number>.<22-character secret>.");
  const all = tokens(text);
  if (!all.length) throw new BadCode("Type the code the sender was given.");
  const [nameplate, ...rest] = all;
  if (!isNameplate(nameplate)) {
    throw new BadCode("The code starts with the number the sender was given (3 to 8 digits).");
  }
  const words = list.splitWords(rest);
  if (words === null) {
    const unknown = rest.find(
      (token, i) =>
        !list.known.has(token) &&
        !(i > 0 && list.known.has(`${rest[i - 1]}-${token}`)) &&
        !(i + 1 < rest.length && list.known.has(`${token}-${rest[i + 1]}`)),
    );
    throw new BadCode(`“${unknown}” is not one of the code's words: check the spelling.`);
  }
  if (words.length < MIN_WORDS || words.length > MAX_WORDS) {
    throw new BadCode(`A code has ${MIN_WORDS} to ${MAX_WORDS} words after the number.`);
  }
  return { nameplate, password: [nameplate, ...words].join("-"), words, isLink: false };
}

/**
 * A fresh link secret: 128 random bits as 22 base64url characters.
 * @returns {string}
 */
export function newSecret() {
  return b64u(randomBytes(16));
}
