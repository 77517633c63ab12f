"""The page's end-to-end peer (``tube/relay/static/js/peer.js``) fails as ``e2e/peer.py`` does:
once the keys are confirmed, a side that fails says why, a sealed ``cancel`` with the reason
``"integrity"`` or ``"protocol"`` under its next counter and then its ``bye``; before
confirmation ``bye`` alone (``tests/relay/peer/test_failures.py`` for the Python peer).

Two of the page's Peers are played against each other in Chromium (``peer_failures.js``);
the end-to-end runs through a hostile relay are in ``test_hostile.py`` and ``test_cli.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import RelayThread

pytestmark = pytest.mark.interop

SCRIPT = (Path(__file__).parent / "peer_failures.js").read_text(encoding="utf-8")
ERRORY_BYE = '{"t":"bye","mood":"errory"}'


def test_page_peer_says_why_it_failed(browser: Any, relay: RelayThread) -> None:
    page = browser.new_page()
    try:
        page.goto(relay.url)
        got = page.evaluate(SCRIPT)
    finally:
        page.close()

    integrity = got["integrity"]
    assert integrity["receiverState"] == "failed"
    assert integrity["receiverEvents"] == [["failed", "IntegrityError"]]
    assert integrity["sent"] == ["0x03", ERRORY_BYE] and integrity["bye"] == ERRORY_BYE
    # Sealed under the receiver's next counter (its accept was 0), with the kind only.
    assert integrity["opened"] == {"t": "cancel", "reason": "integrity"}
    assert integrity["counter"] == 1
    assert integrity["senderEvents"] == [["cancelled", "integrity"]]
    assert integrity["senderState"] == "cancelled"

    protocol = got["protocol"]
    assert protocol["sent"] == ["0x03", ERRORY_BYE]
    assert protocol["senderEvents"] == [["cancelled", "protocol"]]

    unconfirmed = got["unconfirmed"]
    assert unconfirmed["state"] == "failed"
    assert unconfirmed["events"] == [["failed", "WrongCode"]]
    assert unconfirmed["sent"] == ['{"t":"bye","mood":"scary"}']
