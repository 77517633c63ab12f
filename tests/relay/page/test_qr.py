"""The sender's page shows its link as a QR code (``static/js/qr.js``), drawn by the vendored
encoder (``static/vendor/qrcodegen.js``, whose origin and hash ``static/vendor/README.md``
records).

The symbol is read back from the page's SVG by ``qr_decode.py``, a reader written from the
standard apart from the encoder, and compared with the encoder's own output in the browser.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from tube.relay.web import STATIC_DIR

from .conftest import RelayThread
from .pages import make_file, open_pages, start_sending
from .qr_decode import decode

VENDOR = STATIC_DIR / "vendor"
#: npm nayuki-qr-code-generator 1.8.0, package/index.js (also in vendor/README.md).
QRCODEGEN_SHA256 = "daa3aa30adbaf99c4e415f33b9042767e74f053896e55ad06f898d344917d2a7"
QUIET_ZONE = 4
# Runs in the page: the vendored encoder's modules for a text, at qr.js's level (M).
ENCODER_MODULES = """async (text) => {
  const { default: qrcodegen } = await import("tube/vendor/qrcodegen.js");
  const code = qrcodegen.QrCode.encodeText(text, qrcodegen.QrCode.Ecc.MEDIUM);
  return Array.from({ length: code.size }, (_, y) =>
    Array.from({ length: code.size }, (_, x) => code.getModule(x, y)));
}"""


def test_vendored_encoder_is_the_recorded_file() -> None:
    digest = hashlib.sha256((VENDOR / "qrcodegen.js").read_bytes()).hexdigest()
    assert digest == QRCODEGEN_SHA256
    readme = (VENDOR / "README.md").read_text(encoding="utf-8")
    assert QRCODEGEN_SHA256 in readme
    assert "MIT" in (VENDOR / "LICENSE-qrcodegen").read_text(encoding="utf-8")
    assert "MIT License" in (VENDOR / "qrcodegen.js").read_text(encoding="utf-8")[:400]


def modules_of(svg_path: str, side: int) -> list[list[bool]]:
    """The module matrix of qr.js's path (``M{x},{y}h1v1h-1z`` per dark module)."""
    size = side - 2 * QUIET_ZONE
    dark = [[False] * size for _ in range(size)]
    for x, y in re.findall(r"M(\d+),(\d+)h1v1h-1z", svg_path):
        dark[int(y) - QUIET_ZONE][int(x) - QUIET_ZONE] = True
    assert len(re.findall(r"M", svg_path)) == sum(map(sum, dark))
    return dark


@pytest.mark.interop
def test_sender_page_shows_the_link_as_a_qr_code(
    browser: Any, relay: RelayThread, tmp_path: Path
) -> None:
    source = tmp_path / "scan me.txt"
    make_file(source, 1000)
    pages = open_pages(browser, relay.url)
    try:
        page = pages.sender
        page.set_viewport_size({"width": 375, "height": 800})
        link = start_sending(page, source, link=True)
        svg = page.locator("#link-qr svg")
        svg.wait_for(state="visible")
        assert svg.get_attribute("role") == "img" and svg.get_attribute("aria-label")
        box = svg.bounding_box()
        assert box is not None
        # Square, big enough to scan from a screen, inside a phone-sized viewport.
        assert box["width"] == box["height"] and box["width"] >= 150
        assert box["x"] >= 0 and box["x"] + box["width"] <= 375
        view = str(svg.get_attribute("viewBox")).split()
        side = int(view[2])
        assert view == ["0", "0", str(side), str(side)]
        dark = modules_of(str(svg.locator("path").get_attribute("d")), side)
        assert decode(dark) == link
        # The same modules as the encoder's own output for the link.
        mine = page.evaluate(ENCODER_MODULES, link)
        assert mine == dark
        assert pages.errors == []
    finally:
        pages.close()
