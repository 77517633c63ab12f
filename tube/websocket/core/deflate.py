"""permessage-deflate (RFC 7692): options, negotiation for both roles, and the per-message codec.

Three parts, used in this order by a transport:

1. :class:`DeflateOptions`, what this endpoint wants (validated when created);
2. the negotiation, done by :mod:`.handshake` with the functions here: the client builds its
   offer (:func:`client_offer`) and checks the server's answer (:func:`client_accept`); the
   server picks the first acceptable offer and builds its answer (:func:`server_negotiate`).
   Both end with the same :class:`DeflateParameters`, the agreed parameters;
3. :class:`PerMessageDeflate`, the per-connection codec built by the
   :class:`~.protocol.Protocol` from those parameters: it compresses a whole message (and strips
   the ``00 00 ff ff`` tail, RFC 7692 §7.2.1) and decompresses one frame at a time, with an
   output budget so that a small frame can never inflate past the message size limit.

zlib cannot compress with an 8-bit window (``deflateInit2`` refuses raw ``windowBits=8``), so
our own options' 8 is sent as 9, which RFC 7692 §7.1.2 lets us do (a smaller value would only
be a promise we do not need). When the *peer* limits our window to 8 bits, we accept and simply
never compress what we send: RSV1 is per message, so an uncompressed message is always valid.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from .errors import MessageTooBig, ProtocolError
from .extensions import ExtensionOffer, serialize_extension
from .frames import Buffer

__all__ = [
    "EXTENSION_NAME",
    "DeflateOptions",
    "DeflateParameters",
    "PerMessageDeflate",
    "client_accept",
    "client_offer",
    "compression_options",
    "server_negotiate",
]

EXTENSION_NAME = "permessage-deflate"

# RFC 7692 §7.2.1: a compressed message ends with an empty stored block, whose last 4 bytes the
# sender removes and the receiver appends again.
_TAIL = b"\x00\x00\xff\xff"

_SERVER_NO_TAKEOVER = "server_no_context_takeover"
_CLIENT_NO_TAKEOVER = "client_no_context_takeover"
_SERVER_BITS = "server_max_window_bits"
_CLIENT_BITS = "client_max_window_bits"
_KNOWN = frozenset({_SERVER_NO_TAKEOVER, _CLIENT_NO_TAKEOVER, _SERVER_BITS, _CLIENT_BITS})
# RFC 7692 §7.1.2.1: "a decimal integer value without leading zeroes between 8 to 15".
_BITS_RE = re.compile(r"8|9|1[0-5]")


@dataclass(frozen=True, slots=True)
class DeflateOptions:
    """What this endpoint asks for or accepts in permessage-deflate (RFC 7692), in either role.

    The defaults trade a little compression for much less memory per connection: a 12-bit
    (4 KiB) window and zlib ``memLevel`` 5, the values the ``websockets`` library chose. zlib's
    compressor needs about ``2**(window_bits + 2) + 2**(memory_level + 9)`` bytes: 256 KiB with
    zlib's defaults (15, 8), 32 KiB with (12, 5); the decompressor needs its window, 32 KiB
    against 4 KiB. WebSocket messages are mostly small (JSON, chat lines, log records), whose
    redundancy a 4 KiB window already captures, and a server holds thousands of connections.

    Attributes:
        server_no_context_takeover: The server compresses each message on its own (no
            dictionary kept between messages): less compression, no memory kept between
            messages. A client asks for it; a server imposes it on itself.
        client_no_context_takeover: The same for the client's messages. A server asks the client
            for it; a client declares it.
        server_max_window_bits: The largest LZ77 window the server compresses with, as a power
            of two (8-15; 8 is sent as 9, zlib's smallest). A client asks for it unless 15; a
            server uses at most this.
        client_max_window_bits: The same for the client's messages (8-15).
        memory_level: zlib ``memLevel`` of our compressor (1-9): memory against speed.
        compression_level: zlib level of our compressor (0-9; 1 fastest, 9 smallest output).
        min_size: Messages shorter than this many bytes are sent uncompressed unless a send
            asks otherwise (the deflate overhead would exceed the saving).

    Raises:
        ValueError: An option is out of range.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 12
    client_max_window_bits: int = 12
    memory_level: int = 5
    compression_level: int = 6
    min_size: int = 128

    def __post_init__(self) -> None:
        for name in (_SERVER_NO_TAKEOVER, _CLIENT_NO_TAKEOVER):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        _check_int("server_max_window_bits", self.server_max_window_bits, 8, 15)
        _check_int("client_max_window_bits", self.client_max_window_bits, 8, 15)
        _check_int("memory_level", self.memory_level, 1, 9)
        _check_int("compression_level", self.compression_level, 0, 9)
        _check_int("min_size", self.min_size, 0, None)


def _check_int(name: str, value: object, low: int, high: int | None) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bounds = f"{low}-{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an int in {bounds}, got {value!r}")


@dataclass(frozen=True, slots=True)
class DeflateParameters:
    """The outcome of a successful permessage-deflate negotiation (same on both ends).

    Attributes:
        server_no_context_takeover: The server resets its compressor after each message.
        client_no_context_takeover: The client resets its compressor after each message.
        server_max_window_bits: The largest window the server compresses with (8-15).
        client_max_window_bits: The largest window the client compresses with (8-15).
        options: This endpoint's own options (compression level, memory level, ``min_size``).
    """

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int
    client_max_window_bits: int
    options: DeflateOptions


def compression_options(compression: object) -> DeflateOptions | None:
    """Turn a transport's ``compression`` option into options: ``"deflate"`` means defaults.

    Args:
        compression: ``"deflate"``, a :class:`DeflateOptions`, or None (no compression).

    Raises:
        ValueError: Any other value.
    """
    if compression is None or isinstance(compression, DeflateOptions):
        return compression
    if compression == "deflate":
        return DeflateOptions()
    raise ValueError(f'compression must be "deflate", DeflateOptions or None, got {compression!r}')


# --- negotiation ----------------------------------------------------------------------------------


def _params_of(offer: ExtensionOffer) -> dict[str, str | None]:
    """The parameters of one permessage-deflate element, checked (RFC 7692 §7.1).

    Raises:
        ValueError: An unknown or repeated parameter, or an invalid value.
    """
    params: dict[str, str | None] = {}
    for name, value in offer[1]:
        if name not in _KNOWN:
            raise ValueError(f"unknown parameter {name!r}")
        if name in params:
            raise ValueError(f"repeated parameter {name!r}")
        if name in (_SERVER_NO_TAKEOVER, _CLIENT_NO_TAKEOVER):
            if value is not None:
                raise ValueError(f"{name} takes no value, got {value!r}")
        elif value is None:
            # §7.1.2.1: server_max_window_bits always has a value (client_max_window_bits
            # may go without one in an offer, which the caller checks in an answer).
            if name == _SERVER_BITS:
                raise ValueError(f"{name} needs a value")
        elif not _BITS_RE.fullmatch(value):
            raise ValueError(f"{name} must be 8-15, got {value!r}")
        params[name] = value
    return params


def client_offer(options: DeflateOptions) -> str:
    """Build the client's ``Sec-WebSocket-Extensions`` value for ``options`` (RFC 7692 §7.1).

    ``client_max_window_bits`` is always offered (bare when 15, meaning "tell me a limit if you
    like", as browsers send it); ``server_max_window_bits`` only when below 15.
    """
    params: list[tuple[str, str | None]] = []
    if options.server_no_context_takeover:
        params.append((_SERVER_NO_TAKEOVER, None))
    if options.client_no_context_takeover:
        params.append((_CLIENT_NO_TAKEOVER, None))
    if options.server_max_window_bits < 15:
        params.append((_SERVER_BITS, str(max(9, options.server_max_window_bits))))
    client_bits = max(9, options.client_max_window_bits)
    params.append((_CLIENT_BITS, None if client_bits == 15 else str(client_bits)))
    return serialize_extension(EXTENSION_NAME, params)


def client_accept(extensions: list[ExtensionOffer], options: DeflateOptions) -> DeflateParameters:
    """Check the server's answer to :func:`client_offer` (RFC 7692 §5 and §7.1).

    Args:
        extensions: The parsed ``Sec-WebSocket-Extensions`` of the response (not empty).
        options: The options the offer was built from.

    Returns:
        The negotiated parameters.

    Raises:
        ValueError: The answer names another extension, several, an unknown or repeated
            parameter, an invalid value, or one that contradicts the offer (the message says
            which); the handshake must fail (RFC 7692 §7.1: "the client MUST _Fail the
            WebSocket Connection_").
    """
    if len(extensions) != 1 or extensions[0][0].lower() != EXTENSION_NAME:
        names = ", ".join(name for name, _ in extensions)
        raise ValueError(f"expected only {EXTENSION_NAME} (the one offered), got {names}")
    params = _params_of(extensions[0])
    if options.server_no_context_takeover and _SERVER_NO_TAKEOVER not in params:
        # §7.1.1.1: a server accepts this offer only by including the parameter.
        raise ValueError(f"{_SERVER_NO_TAKEOVER} was offered but not in the answer")
    offered_server_bits = max(9, options.server_max_window_bits)
    server_value = params.get(_SERVER_BITS)
    if offered_server_bits < 15:
        # §7.1.2.1: accepted only with "the same or smaller value as the offer".
        if server_value is None:
            raise ValueError(f"{_SERVER_BITS}={offered_server_bits} was offered, not answered")
        if int(server_value) > offered_server_bits:
            raise ValueError(
                f"{_SERVER_BITS}={server_value} is larger than the {offered_server_bits} offered"
            )
    client_bits = max(9, options.client_max_window_bits)
    if _CLIENT_BITS in params:
        value = params[_CLIENT_BITS]
        # §7.1.2.2: the server answers with a value, no larger than the one offered.
        if value is None:
            raise ValueError(f"{_CLIENT_BITS} needs a value in an answer")
        if int(value) > client_bits:
            raise ValueError(f"{_CLIENT_BITS}={value} is larger than the {client_bits} offered")
        client_bits = int(value)
    return DeflateParameters(
        server_no_context_takeover=_SERVER_NO_TAKEOVER in params,
        client_no_context_takeover=(
            options.client_no_context_takeover or _CLIENT_NO_TAKEOVER in params
        ),
        server_max_window_bits=int(server_value) if server_value is not None else 15,
        client_max_window_bits=client_bits,
        options=options,
    )


def server_negotiate(
    extensions: list[ExtensionOffer], options: DeflateOptions
) -> tuple[str, DeflateParameters] | None:
    """Pick the first acceptable permessage-deflate offer and build the answer (RFC 7692 §5).

    An offer with an unknown or repeated parameter, or an invalid value, is declined, as are
    other extensions: the next offer is tried, and without any the connection goes on
    uncompressed (RFC 6455 §9.1 lets a server decline every extension).

    Args:
        extensions: The parsed ``Sec-WebSocket-Extensions`` of the request.
        options: The server's options.

    Returns:
        ``(header value, parameters)`` for the accepted offer, or None.
    """
    for offer in extensions:
        if offer[0].lower() != EXTENSION_NAME:
            continue
        try:
            params = _params_of(offer)
        except ValueError:
            continue
        server_no_takeover = options.server_no_context_takeover or _SERVER_NO_TAKEOVER in params
        client_no_takeover = options.client_no_context_takeover or _CLIENT_NO_TAKEOVER in params
        answer: list[tuple[str, str | None]] = []
        if server_no_takeover:
            answer.append((_SERVER_NO_TAKEOVER, None))
        if client_no_takeover:
            answer.append((_CLIENT_NO_TAKEOVER, None))
        # §7.1.2.1: our window, lowered to the client's limit if it gave one (an offered 8 is
        # kept: we then never compress, see the module docstring).
        server_bits = max(9, options.server_max_window_bits)
        offered = params.get(_SERVER_BITS)
        if offered is not None:
            server_bits = min(server_bits, int(offered))
        if offered is not None or server_bits < 15:
            answer.append((_SERVER_BITS, str(server_bits)))
        # §7.1.2.2: we may limit the client's window only if it offered the parameter;
        # otherwise it may use any window, and we must decompress with 15 bits.
        client_bits = 15
        if _CLIENT_BITS in params:
            offered = params[_CLIENT_BITS]
            client_bits = max(9, options.client_max_window_bits)
            if offered is not None:
                client_bits = min(client_bits, int(offered))
            if client_bits < 15 or offered is not None:
                answer.append((_CLIENT_BITS, str(client_bits)))
        parameters = DeflateParameters(
            server_no_context_takeover=server_no_takeover,
            client_no_context_takeover=client_no_takeover,
            server_max_window_bits=server_bits,
            client_max_window_bits=client_bits,
            options=options,
        )
        return serialize_extension(EXTENSION_NAME, answer), parameters
    return None


# --- the codec ------------------------------------------------------------------------------------


class PerMessageDeflate:
    """One connection's permessage-deflate codec (RFC 7692 §7.2), for one role.

    The compressor and decompressor are created on first use (an idle connection holds
    neither) and, for the side without context takeover, dropped after every message, so their
    memory is held only while a message is being handled.

    Args:
        parameters: The negotiated parameters.
        is_server: True in the server role (we compress with the server's parameters).

    Concurrency: not thread-safe; owned by one :class:`~.protocol.Protocol`.
    """

    __slots__ = (
        "_compressor",
        "_decompressor",
        "_level",
        "_local_bits",
        "_local_reset",
        "_memory_level",
        "_remote_bits",
        "_remote_reset",
        "can_compress",
        "min_size",
    )

    def __init__(self, parameters: DeflateParameters, *, is_server: bool) -> None:
        options = parameters.options
        if is_server:
            local_bits, remote_bits = (
                parameters.server_max_window_bits,
                parameters.client_max_window_bits,
            )
            local_reset = parameters.server_no_context_takeover
            remote_reset = parameters.client_no_context_takeover
        else:
            local_bits, remote_bits = (
                parameters.client_max_window_bits,
                parameters.server_max_window_bits,
            )
            local_reset = parameters.client_no_context_takeover
            remote_reset = parameters.server_no_context_takeover
        self._local_bits = local_bits
        # A larger window than the peer's is always safe for decompressing; zlib wants >= 9.
        self._remote_bits = max(9, remote_bits)
        self._local_reset = local_reset
        self._remote_reset = remote_reset
        self._level = options.compression_level
        self._memory_level = options.memory_level
        #: False when the peer limited our window to 8 bits, which zlib cannot compress with.
        self.can_compress = local_bits >= 9
        #: Messages shorter than this are sent uncompressed by default, in bytes.
        self.min_size = options.min_size
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None

    def compress(self, data: Buffer) -> bytes:
        """Compress one whole message; return the payload to send with RSV1 (tail removed)."""
        compressor = self._compressor
        if compressor is None:
            compressor = zlib.compressobj(
                self._level, zlib.DEFLATED, -self._local_bits, self._memory_level
            )
        # RFC 7692 §7.2.1: flush to a byte boundary with an empty stored block (Z_SYNC_FLUSH
        # ends with 00 00 ff ff) and remove those 4 bytes.
        output = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        # RFC 7692 §7.2.1 / §8.2.3: without context takeover, the next message must not refer
        # to this one; a new compressor (created at the next message) guarantees it.
        self._compressor = None if self._local_reset else compressor
        return output[:-4]

    def decompress(self, data: Buffer, *, fin: bool, max_size: int | None) -> bytes:
        """Decompress one frame's payload of a compressed message.

        Args:
            data: The (unmasked) payload of one frame.
            fin: True for the last frame of the message: the ``00 00 ff ff`` tail is appended
                (RFC 7692 §7.2.2) and, without context takeover, the state is dropped.
            max_size: The most bytes this frame may still produce (what is left of the
                message size limit), or None for no limit. Decompression stops as soon as it
                is exceeded, so a small frame never inflates into a large allocation.

        Returns:
            The decompressed bytes of this frame.

        Raises:
            MessageTooBig: The frame would produce more than ``max_size`` bytes (1009).
            ProtocolError: The payload is not a valid deflate stream (1002).
        """
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = self._decompressor = zlib.decompressobj(-self._remote_bits)
        try:
            if max_size is None:
                output = decompressor.decompress(data)
                if fin:
                    output += decompressor.decompress(_TAIL)
            else:
                # With max_length, zlib stops once that much is produced and keeps the rest of
                # the input in unconsumed_tail: producing one byte more than allowed proves
                # the message too big while holding at most max_size + 1 bytes.
                output = decompressor.decompress(data, max_size + 1)
                if len(output) <= max_size and fin:
                    output += decompressor.decompress(_TAIL, max_size + 1 - len(output))
                if len(output) > max_size or decompressor.unconsumed_tail:
                    raise MessageTooBig("message larger than the size limit once decompressed")
        except zlib.error as error:
            raise ProtocolError(f"invalid compressed data: {error}") from None
        if decompressor.eof and decompressor.unused_data not in (b"", _TAIL):
            # RFC 7692 §7.2.3.4 allows ending a message with a BFINAL block (our tail then
            # lands after it), but data after it would be silently lost.
            raise ProtocolError("compressed data continues after the end of the deflate stream")
        if fin and (self._remote_reset or decompressor.eof):
            # Without context takeover the next message starts afresh; a sender that ended the
            # deflate stream (BFINAL) cannot refer back either.
            self._decompressor = None
        return output
