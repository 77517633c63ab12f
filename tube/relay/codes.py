"""Transfer codes: generation, normalisation and parsing (design §3). Standard library only.

Two forms name one transfer; both give CPace its password (PRS) and the relay its nameplate:

- **Word code** ``4821-ahead-zebra``: a nameplate from the relay (``^[1-9][0-9]{2,7}$``) and
  words from the EFF short word list #1, chosen by the sender. Typed codes are normalised: trim,
  lower-case, every run of spaces, hyphens and dots becomes one ``-`` (so ``" 4821 Ahead  ZEBRA "``
  is ``4821-ahead-zebra``). The password is the normalised full code, nameplate included.
- **Link** ``https://host/#4821.<secret>`` (or just ``4821.<secret>``): 128 random bits as 22
  base64url characters, case-sensitive and never normalised. The password is ``4821.<secret>``.

Every word is checked against the list before anyone connects (:class:`BadCode` names the
unknown word), so a typo does not burn the single-use nameplate.

One word of the list contains a hyphen (``yo-yo``), the normalised separator: a parser joins a
token that is not a word with the next one when the pair is (``yo`` alone is not a word, so
this is unambiguous), and the normalised code keeps ``yo-yo``. The page's port must do the same.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import importlib.resources
import re
import secrets
from collections.abc import Iterable

__all__ = [
    "LINK_SECRET_LENGTH",
    "BadCode",
    "ParsedCode",
    "generate_words",
    "is_nameplate",
    "make_code",
    "make_link",
    "normalise",
    "parse_code",
    "wordlist",
]

#: Length of a link secret: 128 bits as unpadded base64url.
LINK_SECRET_LENGTH = 22
#: The fewest and the most words a word code may carry.
MIN_WORDS = 2
MAX_WORDS = 8

_WORDLIST_NAME = "eff_short_wordlist_1.txt"
_NAMEPLATE = re.compile(r"[1-9][0-9]{2,7}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{22}")
# Runs of whitespace, hyphens and dots are one separator.
_SEPARATORS = re.compile(r"[\s.\-]+")
_SCHEME = re.compile(r"(?i:https?|wss?)://")
_URL = re.compile(r"(?i:https?|wss?)://[^#]*#(.*)", re.DOTALL)


class BadCode(ValueError):
    """A code that cannot be right: bad nameplate, unknown word, malformed link secret."""


@dataclasses.dataclass(frozen=True)
class ParsedCode:
    """A valid code, taken apart.

    Attributes:
        nameplate: the relay's routing number, e.g. ``"4821"``.
        password: CPace's PRS as text: ``"4821-ahead-zebra"`` or ``"4821.<secret>"``.
        words: the code's words (``()`` for a link).
        is_link: True for the link form.
    """

    nameplate: str
    password: str
    words: tuple[str, ...] = ()
    is_link: bool = False

    @property
    def prs(self) -> bytes:
        """The password as CPace takes it: UTF-8 bytes."""
        return self.password.encode()


@functools.cache
def wordlist() -> tuple[str, ...]:
    """Return the EFF short word list #1 shipped with the package (1,296 words, in order).

    Accepts the EFF's ``1111<TAB>acid`` lines as well as plain words, one per line.
    """
    resource = importlib.resources.files("tube.relay") / "static" / "wordlist" / _WORDLIST_NAME
    text = resource.read_text(encoding="utf-8")
    return tuple(line.split("\t")[-1].strip() for line in text.splitlines() if line.strip())


@functools.cache
def _words() -> frozenset[str]:
    return frozenset(wordlist())


def is_nameplate(text: str) -> bool:
    """True if ``text`` is a nameplate: 3 to 8 digits, no leading zero."""
    return _NAMEPLATE.fullmatch(text) is not None


def generate_words(count: int = 2) -> list[str]:
    """Return ``count`` words drawn uniformly and independently from the list (``secrets``).

    Raises:
        ValueError: ``count`` is not between 2 and 8.
    """
    if not MIN_WORDS <= count <= MAX_WORDS:
        raise ValueError(f"count must be {MIN_WORDS}..{MAX_WORDS}, got {count}")
    words = wordlist()
    return [secrets.choice(words) for _ in range(count)]


def make_code(nameplate: str, words: Iterable[str]) -> str:
    """Return the word code ``"<nameplate>-<word>-<word>"``.

    Raises:
        ValueError: a bad nameplate or a word not in the list.
    """
    words = list(words)
    if not is_nameplate(nameplate):
        raise ValueError(f"bad nameplate {nameplate!r}")
    for word in words:
        if word not in _words():
            raise ValueError(f"{word!r} is not in the word list")
    return "-".join([nameplate, *words])


def make_link(base_url: str, nameplate: str) -> tuple[str, str]:
    """Return ``(link, password)`` for the link form, with a fresh 128-bit secret.

    ``base_url`` is the page's address (``https://host/``); the secret goes in the fragment,
    which browsers never send to the server. The password is ``"<nameplate>.<secret>"``.

    Raises:
        ValueError: a bad nameplate.
    """
    if not is_nameplate(nameplate):
        raise ValueError(f"bad nameplate {nameplate!r}")
    secret = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
    password = f"{nameplate}.{secret}"
    return f"{base_url.split('#', 1)[0].rstrip('/')}/#{password}", password


def _link_parts(text: str) -> tuple[str, str] | None:
    """``(nameplate, secret)`` if ``text`` is ``N.<22 base64url chars>`` holding 16 bytes."""
    nameplate, dot, secret = text.partition(".")
    if not dot or not is_nameplate(nameplate) or _SECRET.fullmatch(secret) is None:
        return None
    raw = base64.urlsafe_b64decode(secret + "==")
    # Canonical only: the last character carries 2 bits, the other 4 must be zero.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != secret:
        return None
    return nameplate, secret


def _split_words(tokens: list[str]) -> list[str] | None:
    """Group normalised tokens into list words (``yo`` + ``yo`` → ``yo-yo``); None if one is
    unknown (the caller names it)."""
    known = _words()
    words: list[str] = []
    i = 0
    while i < len(tokens):
        if tokens[i] in known:
            words.append(tokens[i])
            i += 1
        elif i + 1 < len(tokens) and f"{tokens[i]}-{tokens[i + 1]}" in known:
            words.append(f"{tokens[i]}-{tokens[i + 1]}")
            i += 2
        else:
            return None
    return words


def _link(text: str) -> tuple[str, str] | None:
    """``(nameplate, secret)`` if ``text`` (trimmed) is a link or ``N.<secret>``, else None.

    A URL is a link only through its fragment. A bare ``N.<22 chars>`` that also reads as
    four or more words joined by hyphens is taken as words (a secret made only of list words
    and hyphens has negligible probability).
    """
    url = _URL.fullmatch(text)
    if url is not None:
        return _link_parts(url.group(1).strip())
    parts = _link_parts(text)
    if parts is not None and _split_words(_tokens(parts[1])) is not None:
        return None
    return parts


def _tokens(text: str) -> list[str]:
    return [token for token in _SEPARATORS.split(text.strip().lower()) if token]


def normalise(text: str) -> str:
    """Return the canonical form of a typed code.

    Word codes: trimmed, lower-cased, each run of spaces, hyphens and dots made one ``-``, no
    leading or trailing ``-``. A link (``N.<secret>`` or a URL whose fragment is one) becomes
    ``N.<secret>`` with the secret's case kept. Does not check the words: see
    :func:`parse_code`.
    """
    text = text.strip()
    link = _link(text)
    if link is not None:
        return f"{link[0]}.{link[1]}"
    return "-".join(_tokens(text))


def parse_code(text: str) -> ParsedCode:
    """Parse a code as typed or pasted: word code, ``N.<secret>``, or a link URL.

    Raises:
        BadCode: with a message saying what is wrong (empty, bad nameplate, unknown word, too
            few or too many words, malformed link secret).
    """
    text = text.strip()
    link = _link(text)
    if link is not None:
        return ParsedCode(link[0], f"{link[0]}.{link[1]}", (), True)
    if _SCHEME.match(text) is not None:
        raise BadCode("the link must end in #<nameplate>.<22-character secret>")
    tokens = _tokens(text)
    if not tokens:
        raise BadCode("the code is empty")
    nameplate, rest = tokens[0], tokens[1:]
    if not is_nameplate(nameplate):
        raise BadCode(
            "the code must start with the number the sender was given (3 to 8 digits), "
            f"not {nameplate!r}"
        )
    words = _split_words(rest)
    if words is None:
        known = _words()
        unknown = next(t for i, t in enumerate(rest) if t not in known and not _joined(rest, i))
        raise BadCode(f"unknown word {unknown!r} in the code (check the spelling)")
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        raise BadCode(
            f"a code has {MIN_WORDS} to {MAX_WORDS} words after the number, not {len(words)}"
        )
    return ParsedCode(nameplate, "-".join([nameplate, *words]), tuple(words), False)


def _joined(tokens: list[str], i: int) -> bool:
    """True if token ``i`` is half of a hyphenated word with a neighbour."""
    known = _words()
    before = i > 0 and f"{tokens[i - 1]}-{tokens[i]}" in known
    after = i + 1 < len(tokens) and f"{tokens[i]}-{tokens[i + 1]}" in known
    return before or after
