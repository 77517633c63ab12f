// @ts-check
/**
 * The sender's two ways to share one transfer: a word code to read aloud (`4821-ahead-zebra`)
 * and a link to paste (`…/#7305.<128-bit secret>`). They are two CPace passwords, so each has a
 * nameplate of its own and a TRP/1 connection of its own, waiting on it; whichever the receiver
 * claims first is the transfer, and the other is given back (`bye{"mood":"lonely"}`: the relay
 * deletes its nameplate, and a later claim of it gets 4002). The page never has to guess which
 * form the person handed over.
 *
 * A form the relay refuses (its allocation, or its `wait`) is dropped and the other one still
 * works; only when no form is left does the transfer fail. After the choice, the chosen
 * Session's news goes to the page unchanged.
 * @module
 */

import { newSecret } from "tube/codes.js";
import { Session, formatDuration } from "tube/transfer.js";

/** @typedef {import("tube/codes.js").WordList} WordList */
/** @typedef {import("tube/transfer.js").Update} Update */

/**
 * One way to reach the sender.
 * @typedef {object} Form
 * @property {"code" | "link"} kind
 * @property {string} nameplate
 * @property {string} password CPace's PRS: the code, or `<nameplate>.<secret>`
 * @property {string} text what the person passes on: the code, or the whole link
 */

/** The relay would not give a nameplate; `kind` names the reason for tests and styling. */
export class AllocationError extends Error {
  /**
   * @param {string} kind "connection" | "rate-limited" | "busy"
   * @param {string} message for a person
   */
  constructor(kind, message) {
    super(message);
    this.name = "AllocationError";
    this.kind = kind;
  }
}

/**
 * `POST /v1/nameplates`: a fresh nameplate.
 * @param {string} relayHttp the relay's base URL (http://host:port)
 * @returns {Promise<string>}
 * @throws {AllocationError}
 */
export async function allocate(relayHttp) {
  let response;
  try {
    response = await fetch(`${relayHttp}/v1/nameplates`, { method: "POST" });
  } catch {
    throw new AllocationError("connection", "Cannot reach the relay. Check your connection and try again.");
  }
  if (!response.ok) {
    const retry = Number(response.headers.get("Retry-After") || 0);
    const wait = retry ? ` Try again in ${formatDuration(retry)}.` : "";
    if (response.status === 429) {
      throw new AllocationError("rate-limited", `Too many codes from your network at once.${wait}`);
    }
    throw new AllocationError("busy", `The relay is busy.${wait}`);
  }
  const { nameplate } = await response.json();
  if (typeof nameplate !== "string") throw new AllocationError("busy", "The relay gave no code.");
  return nameplate;
}

/**
 * Allocate the nameplates and make the forms: the code always (on whichever nameplate came
 * first), the link when a second nameplate was granted.
 * @param {string} relayHttp
 * @param {WordList} words
 * @param {string} page the page's address without fragment; the link is `page#<N>.<secret>`
 * @returns {Promise<Form[]>}
 * @throws {AllocationError} when the relay granted no nameplate at all
 */
export async function makeForms(relayHttp, words, page) {
  const results = await Promise.allSettled([allocate(relayHttp), allocate(relayHttp)]);
  /** @type {string[]} */
  const granted = [];
  for (const result of results) {
    if (result.status === "fulfilled") granted.push(result.value);
  }
  if (!granted.length) throw /** @type {PromiseRejectedResult} */ (results[0]).reason;
  const code = [granted[0], ...words.generate(2)].join("-");
  /** @type {Form[]} */
  const forms = [{ kind: "code", nameplate: granted[0], password: code, text: code }];
  if (granted.length > 1) {
    const password = `${granted[1]}.${newSecret()}`;
    forms.push({ kind: "link", nameplate: granted[1], password, text: `${page}#${password}` });
  }
  return forms;
}

/** The sender's forms waiting side by side until one is claimed; see the module docstring. */
export class Sharing {
  /**
   * @param {object} options
   * @param {Form[]} options.forms
   * @param {string} options.relay the relay's WebSocket base URL (ws://host:port)
   * @param {File} options.file
   * @param {(update: Update) => void} options.onUpdate the transfer's news, as one Session's
   * @param {(form: Form, used: boolean, why: string) => void} options.onForm a form was
   *   chosen (`used`), or dropped before anyone came (`why` says why)
   */
  constructor({ forms, relay, file, onUpdate, onForm }) {
    this.onUpdate = onUpdate;
    this.onForm = onForm;
    /** @type {Map<Session, Form>} the forms still offered, each with its Session */
    this.live = new Map();
    /** @type {Set<Session>} those whose `wait` the relay took */
    this.waiting = new Set();
    /** @type {Session | null} the one a receiver claimed */
    this.session = null;
    this.over = false;
    for (const form of forms) {
      const session = new Session({
        role: "send",
        relay,
        nameplate: form.nameplate,
        password: form.password,
        file,
        onUpdate: (update) => this._news(session, update),
      });
      this.live.set(session, form);
    }
  }

  /** Connect every form and wait on its nameplate. */
  start() {
    this.onUpdate({ phase: "connecting" });
    for (const session of this.live.keys()) session.start();
  }

  /** Stop: the chosen transfer is cancelled, or every waiting nameplate given back. */
  cancel() {
    if (this.session) {
      this.session.cancel();
      return;
    }
    if (this.over) return;
    this.over = true;
    for (const session of this.live.keys()) session.withdraw();
    this.onUpdate({ phase: "cancelled" });
  }

  /**
   * News from one form's Session.
   * @param {Session} session
   * @param {Update} update
   */
  _news(session, update) {
    if (this.session === session) {
      this.onUpdate(update);
      return;
    }
    const form = this.live.get(session);
    if (this.session !== null || this.over || form === undefined) return;
    switch (update.phase) {
      case "verifying": {
        // Paired: a receiver claimed this form first. The others go at once, so that their
        // nameplates cannot be claimed any more.
        this.session = session;
        for (const other of this.live.keys()) if (other !== session) other.withdraw();
        this.onForm(form, true, "");
        this.onUpdate(update);
        break;
      }
      case "waiting":
        this.waiting.add(session);
        this._allWaiting();
        break;
      case "failed":
        this.live.delete(session);
        this.waiting.delete(session);
        if (!this.live.size) {
          this.over = true;
          this.onUpdate(update);
          return;
        }
        this.onForm(form, false, update.error ?? "");
        this._allWaiting();
        break;
      default:
        break; // "connecting": said once by start()
    }
  }

  /** "waiting" once the relay holds every form still offered. */
  _allWaiting() {
    if (this.live.size && this.waiting.size === this.live.size) this.onUpdate({ phase: "waiting" });
  }
}
