"""Transfer codes: the shipped word list, normalisation, parsing, generation (tube.relay.codes)."""

from __future__ import annotations

import hashlib
import importlib.resources
import subprocess
import sys

import pytest

from tube.relay.codes import (
    BadCode,
    generate_words,
    make_code,
    make_link,
    normalise,
    parse_code,
    wordlist,
)

WORDLIST_SHA256 = "36ecca49e4fa20ca84b176c32f2e9c82f98f446585190e75f9879a95c08247bf"


def test_wordlist_is_the_eff_short_list_one() -> None:
    words = wordlist()
    assert len(words) == 1296
    assert len(set(words)) == 1296
    assert words[:6] == ("acid", "acorn", "acre", "acts", "afar", "affix")
    assert words[-1] == "zoom"
    assert all(word.replace("-", "").isalpha() and word.islower() for word in words)
    resource = importlib.resources.files("tube.relay") / "static" / "wordlist"
    raw = (resource / "eff_short_wordlist_1.txt").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == WORDLIST_SHA256
    assert WORDLIST_SHA256 in (resource / "LICENSE.md").read_text(encoding="utf-8")


def test_codes_module_needs_only_the_standard_library() -> None:
    script = "import sys, tube.relay.codes; print('cryptography' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("typed", "normal"),
    [
        ("4821-ahead-zebra", "4821-ahead-zebra"),
        (" 4821 Ahead  ZEBRA ", "4821-ahead-zebra"),
        ("4821..ahead - zebra\n", "4821-ahead-zebra"),
        ("-4821-ahead-zebra-", "4821-ahead-zebra"),
        ("4821 yo yo acid", "4821-yo-yo-acid"),
        ("4821.AbCdEfGhIjKlMnOpQrStUg", "4821.AbCdEfGhIjKlMnOpQrStUg"),
        ("https://relay.example/#4821.AbCdEfGhIjKlMnOpQrStUg", "4821.AbCdEfGhIjKlMnOpQrStUg"),
    ],
)
def test_normalise(typed: str, normal: str) -> None:
    assert normalise(typed) == normal


def test_parse_word_codes() -> None:
    for typed in ["4821-ahead-zebra", " 4821 Ahead  ZEBRA ", "4821.ahead.zebra"]:
        code = parse_code(typed)
        assert (code.nameplate, code.password, code.words) == (
            "4821",
            "4821-ahead-zebra",
            ("ahead", "zebra"),
        )
        assert code.prs == b"4821-ahead-zebra" and not code.is_link
    assert parse_code("123456-acid-acorn-acre").words == ("acid", "acorn", "acre")
    assert parse_code("4821-yo-yo-acid").words == ("yo-yo", "acid")


def test_parse_links_keep_the_secret_case() -> None:
    link, password = make_link("http://127.0.0.1:8080/", "4821")
    secret = password.split(".", 1)[1]
    assert link == f"http://127.0.0.1:8080/#{password}"
    assert len(secret) == 22
    for typed in [link, password, f"  {link}  ", f"https://other.example/?relay=x#{password}"]:
        code = parse_code(typed)
        assert code.is_link and code.nameplate == "4821" and code.password == password


def test_make_link_secrets_are_fresh() -> None:
    assert make_link("http://h/", "4821")[1] != make_link("http://h/", "4821")[1]


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("4821-ahead-zebar", "zebar"),
        ("4821-zebar-ahead", "zebar"),
        ("4821-yo-acid", "'yo'"),
        ("0821-ahead-zebra", "3 to 8 digits"),
        ("48-ahead-zebra", "3 to 8 digits"),
        ("123456789-ahead-zebra", "3 to 8 digits"),
        ("ahead-zebra", "3 to 8 digits"),
        ("4821-ahead", "2 to 8 words"),
        ("", "empty"),
        ("   ", "empty"),
        ("https://relay.example/#4821.short", "22-character"),
        ("https://relay.example/", "22-character"),
    ],
)
def test_bad_codes_say_what_is_wrong(typed: str, message: str) -> None:
    with pytest.raises(BadCode, match=message):
        parse_code(typed)
    assert issubclass(BadCode, ValueError)


def test_non_canonical_secret_is_not_a_link() -> None:
    # 22 base64url characters whose last one carries nonzero padding bits hold no 16 bytes.
    with pytest.raises(BadCode):
        parse_code("4821.AbCdEfGhIjKlMnOpQrStUv")


def test_generate_and_make_code() -> None:
    words = generate_words(3)
    assert len(words) == 3 and all(word in wordlist() for word in words)
    code = make_code("4821", words)
    assert parse_code(code).password == code
    assert len({tuple(generate_words()) for _ in range(50)}) > 40
    with pytest.raises(ValueError):
        generate_words(1)
    with pytest.raises(ValueError):
        make_code("0821", ["acid", "acorn"])
    with pytest.raises(ValueError):
        make_code("4821", ["acid", "nope"])
