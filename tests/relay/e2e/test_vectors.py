"""tests/vectors/tube-e2e-v1.json (shared with the page) agrees with the code, both ways."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import pathlib
from typing import Any

import pytest

from tube.relay.e2e import (
    ChunkOpener,
    CPace,
    CtrlOpener,
    calculate_generator,
    check_confirm,
    commitment,
    confirm_tag,
    data_aad,
    derive_keys,
    file_id,
    generator_string,
    hkdf_expand,
    hkdf_extract,
    seal_chunk,
    seal_ctrl,
)
from tube.relay.e2e.framing import ctrl_plaintext

VECTORS_DIR = pathlib.Path(__file__).resolve().parents[2] / "vectors"
VECTORS_FILE = VECTORS_DIR / "tube-e2e-v1.json"
V: dict[str, Any] = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def test_generator_script_reproduces_the_file() -> None:
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS_DIR / "make_vectors.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered: str = module.render()
    assert rendered == VECTORS_FILE.read_text(encoding="utf-8")


@pytest.mark.parametrize("mode", ["word", "link"])
def test_cpace_vectors(mode: str) -> None:
    v = V["cpace"][mode]
    prs = v["prs"].encode()
    assert prs == h(v["prs_hex"])
    if mode == "word":
        assert v["prs"] == "4821-ahead-zebra"
    else:
        nameplate, secret = v["prs"].split(".")
        assert nameplate == "4821"
        assert len(secret) == 22
        assert len(base64.urlsafe_b64decode(secret + "==")) == 16
    ci, sid = h(v["ci"]), h(v["sid"])
    assert ci == b"tube/1"
    assert len(sid) == 16
    assert generator_string(prs, ci, sid) == h(v["generator_string"])
    assert calculate_generator(prs, ci, sid) == h(v["g"])
    sender = CPace(prs, sid, "send", scalar=h(v["scalar_s"]))
    receiver = CPace(prs, sid, "recv", scalar=h(v["scalar_r"]))
    assert sender.message == h(v["message_s"])
    assert receiver.message == h(v["message_r"])
    assert sender.finish(receiver.message) == h(v["isk"])
    assert receiver.finish(sender.message) == h(v["isk"])
    assert sender.transcript == receiver.transcript == h(v["transcript"])


def test_key_schedule_vectors() -> None:
    v = V["keys"]
    assert h(v["isk"]) == h(V["cpace"]["word"]["isk"])
    keys = derive_keys(h(v["isk"]), h(v["sid"]))
    prk = hkdf_extract(h(v["sid"]), h(v["isk"]))
    assert prk == h(v["prk"])
    assert keys.confirm_s == h(v["confirm_s"])
    assert keys.confirm_r == h(v["confirm_r"])
    assert keys.k_ctrl_s2r == h(v["k_ctrl_s2r"])
    assert keys.k_ctrl_r2s == h(v["k_ctrl_r2s"])
    assert hkdf_expand(prk, b"tube/1 resume_secret", 32) == h(v["resume_secret"])
    assert keys.rid == h(v["rid"])
    assert hkdf_expand(prk, b"tube/1 verifier", 8) == h(v["verifier_bytes"])
    assert keys.verifier == v["verifier"]
    assert int.from_bytes(h(v["verifier_bytes"]), "big") % 10**6 == int(v["verifier"])


def test_commitment_and_confirm_vectors() -> None:
    keys = derive_keys(h(V["keys"]["isk"]), h(V["keys"]["sid"]))
    assert commitment(h(V["commitment"]["message_s"])) == h(V["commitment"]["commitment"])
    transcript = h(V["confirm"]["transcript"])
    assert confirm_tag(keys.confirm_s, transcript) == h(V["confirm"]["tag_s"])
    assert confirm_tag(keys.confirm_r, transcript) == h(V["confirm"]["tag_r"])
    check_confirm(keys.confirm_s, transcript, h(V["confirm"]["tag_s"]))
    check_confirm(keys.confirm_r, transcript, h(V["confirm"]["tag_r"]))


def test_file_id_and_data_key_vectors() -> None:
    v = V["file_id"]
    fid = file_id(h(v["salt"]), v["name"], v["size"], v["last_modified_ms"])
    assert fid == h(v["file_id"])
    assert hashlib.sha256(h(v["encoded"])).digest()[:16] == fid
    keys = derive_keys(h(V["keys"]["isk"]), h(V["keys"]["sid"]))
    d = V["data_key"]
    assert keys.data_key(h(d["file_id"]), d["epoch"], h(d["stream_nonce"])) == h(d["key"])


def test_data_aad_vectors() -> None:
    assert [a["what"] for a in V["data_aad"]] == [
        "first of 3",
        "middle of 3",
        "final of 3",
        "empty file",
    ]
    for a in V["data_aad"]:
        aad = data_aad(h(a["file_id"]), a["epoch"], a["index"], a["final"], a["total_size"])
        assert aad == h(a["aad"])
        assert len(aad) == 48


def test_chunk_vectors() -> None:
    c = V["chunks"]
    key, fid, epoch, size = h(c["key"]), h(c["file_id"]), c["epoch"], c["total_size"]
    assert key == h(V["data_key"]["key"])
    full = seal_chunk(key, fid, epoch, 0, size, bytes(i % 251 for i in range(262144)))
    assert len(full) == c["full"]["frame_length"]
    assert hashlib.sha256(full).hexdigest() == c["full"]["frame_sha256"]
    assert full[:64] == h(c["full"]["frame_head"])
    final_plain = h(c["final"]["plaintext"])
    assert final_plain == bytes((262144 + i) % 251 for i in range(len(final_plain)))
    final = seal_chunk(key, fid, epoch, 1, size, final_plain)
    assert final == h(c["final"]["frame"])
    opener = ChunkOpener(key, fid, epoch, size)
    opener.open(full)
    assert opener.open(h(c["final"]["frame"])) == final_plain
    assert opener.done
    empty = ChunkOpener(key, fid, epoch, 0)
    assert empty.open(h(c["empty_file"]["frame"])) == b""
    assert empty.done


def test_ctrl_vectors() -> None:
    keys = derive_keys(h(V["keys"]["isk"]), h(V["keys"]["sid"]))
    directions = {"s2r": keys.k_ctrl_s2r, "r2s": keys.k_ctrl_r2s}
    for c in V["ctrl"]:
        key = h(c["key"])
        assert key == directions[c["direction"]]
        assert ctrl_plaintext(c["json"]) == h(c["plaintext"])
        assert seal_ctrl(key, c["counter"], c["json"]) == h(c["frame"])
        opener = CtrlOpener(key)
        assert opener.open(h(c["frame"])) == c["json"]
        assert opener.last == c["counter"]
