"""CPace-X25519-SHA512, the PAKE that turns the short code into a shared key (design §4.1, §4.2).

Follows draft-irtf-cfrg-cpace (github.com/cfrg/draft-irtf-cfrg-cpace), suite
CPACE-X25519-SHA512: DSI ``b"CPace255"``, SHA-512 with its 128-byte input block, Elligator2 with
Z = 2 onto Curve25519, X25519 for both scalar multiplications. The draft's own test vectors
(``tests/vectors/cpace/``) are reproduced by the tests.

Our parameters: PRS is the UTF-8 of the normalised full code (nameplate included), CI is
``b"tube/1"``, sid is the relay's 16-byte ``pair_id``, AD is a role byte (``S``/``R``) followed by
the version byte 1, and the transcript is always initiator-responder with the *sender* as the
initiator, whatever order the messages arrive in: the roles are fixed by the relay protocol, which
is the draft's remedy against reflection.

Sans-I/O: no sockets, no clocks. Only X25519 comes from ``cryptography``; the rest is stdlib.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from .errors import ProtocolViolation, WrongCode

__all__ = [
    "AD_RECV",
    "AD_SEND",
    "CI",
    "DSI",
    "ROLE_RECV",
    "ROLE_SEND",
    "VERSION",
    "CPace",
    "calculate_generator",
    "decode_u_coordinate",
    "elligator2",
    "generator_string",
    "lv_cat",
    "prepend_len",
    "scalar_mult_vfy",
]

#: Domain-separation identifier of G_X25519 (draft §"CPace group objects G_X25519 ...").
DSI = b"CPace255"
#: Channel identifier of TRP/1: binds the key to this protocol and version.
CI = b"tube/1"
#: Version byte carried in AD; a peer announcing another version is a downgrade attempt.
VERSION = 1
ROLE_SEND = 0x53  # "S"
ROLE_RECV = 0x52  # "R"
AD_SEND = bytes([ROLE_SEND, VERSION])
AD_RECV = bytes([ROLE_RECV, VERSION])

# Curve25519 over GF(p), p = 2^255 - 19, Montgomery coefficient A (RFC 7748 §4.1).
_P = 2**255 - 19
_A = 486662
# Elligator2's non-square Z: the draft's find_z_ell2 gives 2 for Curve25519 (RFC 9380 too).
_Z = 2
# A/2 mod p, computed once: the map's x = eps*v - (1 - eps)*A/2.
_HALF_A = _A * pow(2, _P - 2, _P) % _P
# Euler's criterion: a^((p-1)/2) is 1 for a non-zero square, p-1 for a non-square, 0 for 0.
_LEGENDRE = (_P - 1) // 2
# Field inversion by Fermat, a fixed exponent (inv0(0) = 0, as RFC 9380 §4 defines it).
_INVERT = _P - 2

_FIELD_BYTES = 32
_ZERO = bytes(_FIELD_BYTES)
# A CPACE body: LEB128(32) ‖ Y(32) ‖ LEB128(2) ‖ AD(2).
_MESSAGE_LENGTH = 1 + _FIELD_BYTES + 1 + 2


def prepend_len(data: bytes) -> bytes:
    """Return ``data`` prefixed with its length as LEB128 (draft appendix "prepend_len").

    7 bits per byte, least significant first, bit 7 set while more bytes follow.
    """
    length = len(data)
    encoded = bytearray()
    while True:
        if length < 128:
            encoded.append(length)
        else:
            encoded.append((length & 0x7F) | 0x80)
        length >>= 7
        if length == 0:
            break
    return bytes(encoded) + data


def lv_cat(*parts: bytes) -> bytes:
    """Concatenate ``parts``, each prefixed with its LEB128 length (draft "lv_cat").

    Length prefixes make the encoding injective: ``lv_cat(b"ab", b"c") != lv_cat(b"a", b"bc")``.
    """
    return b"".join(prepend_len(part) for part in parts)


def generator_string(
    prs: bytes, ci: bytes, sid: bytes, dsi: bytes = DSI, s_in_bytes: int = 128
) -> bytes:
    """Return ``lv_cat(DSI, PRS, zero_bytes(len_zpad), CI, sid)`` (draft "generator_string").

    ``len_zpad = max(0, s_in_bytes - len(prepend_len(PRS)) - len(prepend_len(DSI)) - 1)``: the
    zero padding makes DSI and a short PRS fill the hash's first input block exactly, so the
    amount hashed does not depend on the password's length.
    """
    len_zpad = max(0, s_in_bytes - len(prepend_len(prs)) - len(prepend_len(dsi)) - 1)
    return lv_cat(dsi, prs, bytes(len_zpad), ci, sid)


def decode_u_coordinate(u: bytes, bits: int = 255) -> int:
    """Decode a little-endian u-coordinate, clearing the unused top bits (RFC 7748 §5).

    The result is *not* reduced mod p (RFC 7748 leaves that to the arithmetic).
    """
    if len(u) != (bits + 7) // 8:
        raise ValueError(f"expected {(bits + 7) // 8} bytes, got {len(u)}")
    value = int.from_bytes(u, "little")
    return value & ((1 << bits) - 1)


def elligator2(r: int) -> int:
    """Map the field element ``r`` to the u-coordinate of a point on Curve25519.

    Straight-line after the draft's appendix "Elligator 2 reference implementation" (RFC 9380
    ``map_to_curve_elligator2`` with Z = 2)::

        v   = -A / (1 + Z*r^2)
        eps = (v^3 + A*v^2 + v)^((p-1)/2)      # Legendre symbol: 1 or -1 here
        x   = eps*v - (1 - eps)*A/2

    No branch depends on ``r``: the inversion and the Legendre symbol are powers with fixed
    exponents, and the choice between ``v`` and ``-v - A`` is arithmetic on ``eps``. The
    denominator is never 0, because ``-1/Z`` is a non-square mod p.

    Residual timing risk: Python integers are not constant-time (multiplication and reduction
    cost depends on operand size, ``pow`` is CPython's windowed exponentiation), so the map
    leaks a little about ``r``, which is derived from the code. An observer gets at most one
    sample per single-use code, inside interpreter and network noise; the same residual exists
    in the browser's BigInt implementation and is listed in docs/relay.md.

    Returns the u-coordinate as an integer in ``[0, p)``.
    """
    r %= _P
    denominator = (1 + _Z * r * r) % _P
    v = (-_A * pow(denominator, _INVERT, _P)) % _P
    gx = (v * (v * (v + _A) + 1)) % _P  # v^3 + A v^2 + v, with B = 1
    eps = pow(gx, _LEGENDRE, _P)
    return (eps * v - (1 - eps) * _HALF_A) % _P


def calculate_generator(prs: bytes, ci: bytes, sid: bytes) -> bytes:
    """Return the session's generator g as a 32-byte little-endian u-coordinate.

    ``g = Elligator2(decodeUCoordinate(SHA-512(generator_string(...))[0:32], 255))``: a
    generator nobody knows the discrete logarithm of, bound to the password, CI and sid.
    """
    gen_hash = hashlib.sha512(generator_string(prs, ci, sid)).digest()[:_FIELD_BYTES]
    u = elligator2(decode_u_coordinate(gen_hash, 255))
    return u.to_bytes(_FIELD_BYTES, "little")


def scalar_mult_vfy(scalar: bytes, point: bytes) -> bytes:
    """Return X25519(scalar, point), aborting on the neutral element (draft "scalar_mult_vfy").

    ``cryptography`` clamps the scalar and masks bit 255 of the point as RFC 7748 requires, and
    raises ``ValueError`` itself when the result is all zeros (a low-order point); both that and
    an all-zero result we see ourselves are the same abort, so both raise :class:`WrongCode`.

    Raises:
        ValueError: ``scalar`` or ``point`` is not 32 bytes (local misuse).
        WrongCode: the result is the neutral element.
    """
    if len(scalar) != _FIELD_BYTES or len(point) != _FIELD_BYTES:
        raise ValueError("X25519 scalars and points are 32 bytes")
    try:
        result = X25519PrivateKey.from_private_bytes(scalar).exchange(
            X25519PublicKey.from_public_bytes(point)
        )
    except ValueError:
        # Raised by OpenSSL for an all-zero shared secret (draft: "MUST abort if K = G.I").
        raise WrongCode() from None
    # Our own check too, in case a backend stops raising (the browser has to do the same).
    if result == _ZERO:
        raise WrongCode()
    return result


class CPace:
    """One party's run of CPace: build :attr:`message`, send it, feed the peer's to :meth:`finish`.

    Args:
        prs: the password-related string, UTF-8 of the normalised full code.
        sid: the session id, the relay's 16-byte ``pair_id``.
        role: ``"send"`` (the initiator in the transcript) or ``"recv"``.
        ci: the channel identifier (``b"tube/1"``; other values only for the draft's vectors).
        scalar: the 32-byte secret scalar, for tests only; fresh random bytes by default.

    Raises:
        ValueError: unknown role or a scalar that is not 32 bytes.

    Not thread-safe; one object per run, and :meth:`finish` succeeds at most once.
    """

    def __init__(
        self,
        prs: bytes,
        sid: bytes,
        role: str,
        *,
        ci: bytes = CI,
        scalar: bytes | None = None,
    ) -> None:
        if role == "send":
            self._ad, self._peer_role = AD_SEND, ROLE_RECV
        elif role == "recv":
            self._ad, self._peer_role = AD_RECV, ROLE_SEND
        else:
            raise ValueError(f"role must be 'send' or 'recv', got {role!r}")
        if scalar is None:
            # Draft: G_X25519.sample_scalar() = 32 random bytes (X25519 clamps them).
            scalar = os.urandom(_FIELD_BYTES)
        elif len(scalar) != _FIELD_BYTES:
            raise ValueError("the scalar must be 32 bytes")
        self.role = role
        self._sid = sid
        # Dropped in finish(): forward secrecy needs the ephemeral scalar gone after use.
        self._scalar: bytes | None = scalar
        self._y = scalar_mult_vfy(scalar, calculate_generator(prs, ci, sid))
        #: Our CPACE body: ``lv_cat(Y, AD)``, sent in a CPACE frame (and committed to by S).
        self.message: bytes = lv_cat(self._y, self._ad)
        self._transcript: bytes | None = None

    @property
    def transcript(self) -> bytes:
        """``lv_cat(Y_S, AD_S) ‖ lv_cat(Y_R, AD_R)``, the input of the confirmation tags.

        Raises:
            RuntimeError: :meth:`finish` has not succeeded yet.
        """
        if self._transcript is None:
            raise RuntimeError("the transcript exists only after finish()")
        return self._transcript

    def finish(self, peer_message: bytes) -> bytes:
        """Check the peer's CPACE body and return the 64-byte intermediate session key ISK.

        ``ISK = SHA-512(lv_cat(b"CPace255_ISK", sid, K) ‖ transcript_ir)``. K is not kept.

        Raises:
            ProtocolViolation: ``peer_message`` is not exactly ``lv_cat(32-byte Y, 2-byte AD)``,
                carries our own role (reflection), an unknown role, or a version other than 1.
            WrongCode: K is the neutral element (a low-order point from the peer).
            RuntimeError: called again after a successful run (local misuse).
        """
        if self._scalar is None:
            raise RuntimeError("finish() already succeeded; start a new CPace run")
        peer_y, peer_ad = _parse_message(peer_message)
        if peer_ad[0] != self._peer_role:
            if peer_ad[0] == self._ad[0]:
                # Draft §"Security considerations": our own message sent back to us.
                raise ProtocolViolation("the peer's CPACE message carries our own role")
            raise ProtocolViolation(f"unknown role byte 0x{peer_ad[0]:02x} in CPACE")
        if peer_ad[1] != VERSION:
            raise ProtocolViolation(f"CPACE version {peer_ad[1]}, expected {VERSION}")
        k = scalar_mult_vfy(self._scalar, peer_y)
        if self._ad[0] == ROLE_SEND:
            transcript = self.message + peer_message
        else:
            transcript = peer_message + self.message
        isk = hashlib.sha512(lv_cat(DSI + b"_ISK", self._sid, k) + transcript).digest()
        del k
        self._scalar = None
        self._transcript = transcript
        return isk


def _parse_message(message: bytes) -> tuple[bytes, bytes]:
    """Split a CPACE body into (Y, AD), accepting exactly one encoding and nothing after it."""
    if (
        len(message) != _MESSAGE_LENGTH
        or message[0] != _FIELD_BYTES
        or message[1 + _FIELD_BYTES] != 2
    ):
        raise ProtocolViolation("a CPACE message is lv_cat(32-byte Y, 2-byte AD)")
    return message[1 : 1 + _FIELD_BYTES], message[2 + _FIELD_BYTES :]
