// @ts-check
/**
 * The end-to-end failures, as in the Python peer (`tube/relay/e2e/errors.py`): each one caused
 * by the other side or by a relay in the middle, and each shown to the person as one message.
 * @module
 */

/** Base of every end-to-end failure caused by the peer or the relay. */
export class E2EError extends Error {}

/** The key exchange failed: the code is wrong, or someone is in the middle. */
export class WrongCode extends E2EError {
  constructor() {
    super("wrong code or interference");
    this.name = "WrongCode";
  }
}

/** A chunk or control message failed authentication, or came out of order. */
export class IntegrityError extends E2EError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "IntegrityError";
  }
}

/** An authentic message that breaks the protocol's rules (wrong state, bad field). */
export class ProtocolViolation extends E2EError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "ProtocolViolation";
  }
}

/** Local misuse of the peer by the page's own code: a bug, never the peer's fault. */
export class PeerStateError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "PeerStateError";
  }
}
