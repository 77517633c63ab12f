"""The page's end-to-end crypto, run in Chromium, reproduces the shared vectors byte for byte.

The CPace draft's G_X25519 vectors (g, Ya, Yb, K, ISK_IR, ISK_SY) and its low-order table,
and every vector of ``tests/vectors/tube-e2e-v1.json`` (CPace runs for a word code and a link,
key schedule, commitment, CONFIRM tags, file id, data key, AADs, DATA frames, sealed control
messages) are computed by the page's own modules (imported through the page's import map) and
compared here with the files, so the page and the Python peer agree (design §9.2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import RelayThread

pytestmark = pytest.mark.interop

VECTORS = Path(__file__).parents[2] / "vectors"

# Runs in the page: every computation the vectors pin, results as hex.
SCRIPT = (Path(__file__).parent / "vectors_check.js").read_text(encoding="utf-8")


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_page_crypto_reproduces_the_vectors(browser: Any, relay: RelayThread) -> None:
    draft = load(VECTORS / "cpace" / "testvectors.json")["G_25519"]
    low = load(VECTORS / "cpace" / "low_order.json")
    tube = load(VECTORS / "tube-e2e-v1.json")
    page = browser.new_page()
    try:
        page.goto(relay.url)
        got = page.evaluate(SCRIPT, [draft, low, tube])
    finally:
        page.close()

    for name in ("g", "Ya", "Yb", "K", "ISK_IR", "ISK_SY"):
        assert got[name] == draft[name].lower(), name
    assert got["K_b"] == draft["K"].lower()
    for name in low["points"]:
        result = "q" + name[1:]
        if name in low["must_abort"]:
            assert got["low"][name] == "WrongCode", name
        else:
            assert got["low"][name] == low["results"][result], name

    for kind, vector in tube["cpace"].items():
        run = got["cpace"][kind]
        for field in ("generator_string", "g", "message_s", "message_r", "transcript", "isk"):
            assert run[field] == vector[field], (kind, field)
        assert run["transcript_r"] == vector["transcript"]
        assert run["isk_r"] == vector["isk"]

    keys = tube["keys"]
    for field in ("prk", "confirm_s", "confirm_r", "k_ctrl_s2r", "k_ctrl_r2s", "resume_secret"):
        assert got["keys"][field] == keys[field], field
    assert got["keys"]["rid"] == keys["rid"]
    assert got["keys"]["verifier_bytes"] == keys["verifier_bytes"]
    assert got["keys"]["verifier"] == keys["verifier"]
    assert got["commitment"] == tube["commitment"]["commitment"]
    assert (got["tag_s"], got["tag_r"]) == (tube["confirm"]["tag_s"], tube["confirm"]["tag_r"])
    assert got["confirm_ok"] and got["wrong_tag"] == "WrongCode"
    assert got["file_id"] == tube["file_id"]["file_id"]

    assert got["aad"] == [a["aad"] for a in tube["data_aad"]]
    chunks = tube["chunks"]
    assert got["full"] == {
        "length": chunks["full"]["frame_length"],
        "sha256": chunks["full"]["frame_sha256"],
        "head": chunks["full"]["frame_head"],
    }
    assert got["final"] == chunks["final"]["frame"]
    assert got["empty"] == chunks["empty_file"]["frame"]
    assert got["opened"] == [262144, chunks["final"]["plaintext"], True]

    for mine, vector in zip(got["ctrl"], tube["ctrl"], strict=True):
        assert mine["plaintext"] == vector["plaintext"]
        assert mine["frame"] == vector["frame"]
        assert mine["back"] == vector["json"]
