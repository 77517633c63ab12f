"""The ``Sec-WebSocket-Extensions`` header: parsing and serialisation (RFC 6455 §9.1).

The grammar (RFC 6455 §9.1, with the list rules of RFC 9110 §5.6.1)::

    Sec-WebSocket-Extensions = 1#extension
    extension       = extension-token *( ";" extension-param )
    extension-param = token [ "=" ( token / quoted-string ) ]

A quoted value must still be a token once unquoted (RFC 6455 §9.1), so ``a="12"`` is ``a=12``.
The header may be repeated; its values are joined with commas first (RFC 9110 §5.3), and a
comma inside a quoted string does not split elements.

The negotiation of a particular extension (permessage-deflate) lives in :mod:`.deflate`; this
module only turns text into ``(name, [(param, value or None), ...])`` pairs and back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["ExtensionOffer", "parse_extensions", "serialize_extension"]

ExtensionOffer = tuple[str, list[tuple[str, str | None]]]
"""One element of the header: the extension's name and its parameters, in order."""

_TCHARS_RE_TEXT = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_OWS = r"[ \t]*"
# At a position: optional whitespace, then a token.
_TOKEN_RE = re.compile(_OWS + "(" + _TCHARS_RE_TEXT + ")")
# A quoted string; backslash escapes any character (RFC 9110 §5.6.4).
_QUOTED_RE = re.compile(_OWS + r'"((?:[^"\\]|\\.)*)"')
_UNESCAPE_RE = re.compile(r"\\(.)")
_TOKEN_ONLY_RE = re.compile(_TCHARS_RE_TEXT)
_SEPARATOR_RE = re.compile(_OWS + r"([,;=]|\Z)")


def parse_extensions(values: Sequence[str]) -> list[ExtensionOffer]:
    """Parse every ``Sec-WebSocket-Extensions`` header value into its elements.

    Args:
        values: The values of every ``Sec-WebSocket-Extensions`` header, in order.

    Returns:
        The extensions, in order, each with its parameters in order (a parameter without a
        value has ``None``). Parameter names keep their case; the caller compares them.

    Raises:
        ValueError: The text does not follow the grammar (the message says where).
    """
    text = ", ".join(values)
    result: list[ExtensionOffer] = []
    position = 0
    end = len(text)
    expect_element = True
    while True:
        # Empty list elements (", ,") are allowed and skipped (RFC 9110 §5.6.1).
        separator = _SEPARATOR_RE.match(text, position)
        if separator is not None and separator.group(1) in (",", ""):
            if separator.group(1) == "":
                break
            position = separator.end()
            expect_element = True
            continue
        if not expect_element:
            raise ValueError(f"expected ',' at offset {position} of {text[:200]!r}")
        name = _TOKEN_RE.match(text, position)
        if name is None:
            raise ValueError(f"expected an extension name at offset {position} of {text[:200]!r}")
        position = name.end()
        params: list[tuple[str, str | None]] = []
        while True:
            separator = _SEPARATOR_RE.match(text, position)
            if separator is None or separator.group(1) != ";":
                break
            param = _TOKEN_RE.match(text, separator.end())
            if param is None:
                raise ValueError(
                    f"expected a parameter name at offset {separator.end()} of {text[:200]!r}"
                )
            position = param.end()
            value: str | None = None
            separator = _SEPARATOR_RE.match(text, position)
            if separator is not None and separator.group(1) == "=":
                position = separator.end()
                value, position = _parse_value(text, position)
            params.append((param.group(1), value))
        result.append((name.group(1), params))
        expect_element = False
        if position >= end:
            break
    return result


def _parse_value(text: str, position: int) -> tuple[str, int]:
    """Parse a parameter value (token or quoted string) at ``position``."""
    token = _TOKEN_RE.match(text, position)
    if token is not None:
        return token.group(1), token.end()
    quoted = _QUOTED_RE.match(text, position)
    if quoted is None:
        raise ValueError(f"expected a parameter value at offset {position} of {text[:200]!r}")
    value = _UNESCAPE_RE.sub(r"\1", quoted.group(1))
    # RFC 6455 §9.1: once unquoted, the value MUST conform to the token rule.
    if not _TOKEN_ONLY_RE.fullmatch(value):
        raise ValueError(f"quoted parameter value {value[:60]!r} is not a token")
    return value, quoted.end()


def serialize_extension(name: str, params: Sequence[tuple[str, str | None]]) -> str:
    """Build one element of a ``Sec-WebSocket-Extensions`` header, ``name; a; b=1``."""
    parts = [name]
    for param, value in params:
        parts.append(param if value is None else f"{param}={value}")
    return "; ".join(parts)
