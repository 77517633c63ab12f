"""Write tests/vectors/tube-e2e-v1.json, the vectors the Python peer and the page share.

Deterministic: every "random" input is ``SHA-512(b"tube/1 test vector " + label)`` cut to
length, so running this again reproduces the file byte for byte (a test checks it). Run from
the repository root::

    python tests/vectors/make_vectors.py          # rewrite the file
    python tests/vectors/make_vectors.py --check  # exit 1 if the file is stale

The fields are described in tests/vectors/README.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import sys
from typing import Any

from tube.relay.e2e import (
    CHUNK_SIZE,
    CPace,
    calculate_generator,
    chunk_count,
    commitment,
    confirm_tag,
    data_aad,
    derive_keys,
    expected_length,
    file_id,
    generator_string,
    hkdf_expand,
    hkdf_extract,
    lv_cat,
    seal_chunk,
    seal_ctrl,
)
from tube.relay.e2e.framing import ctrl_plaintext

PATH = pathlib.Path(__file__).resolve().parent / "tube-e2e-v1.json"

CI = b"tube/1"
WORD_CODE = "4821-ahead-zebra"


def fixed(label: str, length: int) -> bytes:
    """The vectors' stand-in for random bytes: a hash of the label, ``length`` <= 64 bytes."""
    return hashlib.sha512(b"tube/1 test vector " + label.encode()).digest()[:length]


def file_bytes(offset: int, length: int) -> bytes:
    """The test file's content: the byte at file offset ``o`` is ``o % 251``."""
    return bytes((offset + i) % 251 for i in range(length))


def b64u(data: bytes) -> str:
    """Unpadded base64url, as the protocol's JSON carries bytes (peer.py's ``b64u``)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def link_code() -> str:
    """The link-mode code: nameplate, a dot, 16 secret bytes as 22 base64url characters."""
    return f"4821.{b64u(fixed('link secret', 16))}"


def cpace_run(code: str, label: str) -> tuple[dict[str, Any], CPace, bytes]:
    """One CPace exchange for ``code``, both sides with fixed scalars."""
    prs = code.encode()
    sid = fixed("sid", 16)
    scalar_s = fixed(f"{label} scalar S", 32)
    scalar_r = fixed(f"{label} scalar R", 32)
    sender = CPace(prs, sid, "send", scalar=scalar_s)
    receiver = CPace(prs, sid, "recv", scalar=scalar_r)
    isk = sender.finish(receiver.message)
    assert receiver.finish(sender.message) == isk
    assert receiver.transcript == sender.transcript
    entry = {
        "prs": code,
        "prs_hex": prs.hex(),
        "ci": CI.hex(),
        "sid": sid.hex(),
        "generator_string": generator_string(prs, CI, sid).hex(),
        "g": calculate_generator(prs, CI, sid).hex(),
        "scalar_s": scalar_s.hex(),
        "scalar_r": scalar_r.hex(),
        "message_s": sender.message.hex(),
        "message_r": receiver.message.hex(),
        "transcript": sender.transcript.hex(),
        "isk": isk.hex(),
    }
    return entry, sender, isk


def build() -> dict[str, Any]:
    """Compute every vector; the dict is written as JSON in this order."""
    word, sender, isk = cpace_run(WORD_CODE, "word")
    link, _, _ = cpace_run(link_code(), "link")
    sid = bytes.fromhex(word["sid"])
    keys = derive_keys(isk, sid)
    # PRK, resume_secret and the verifier's bytes are not part of the API; they are written
    # out so that a second implementation can find where it first differs.
    prk = hkdf_extract(sid, isk)
    resume_secret = hkdf_expand(prk, b"tube/1 resume_secret", 32)
    verifier_bytes = hkdf_expand(prk, b"tube/1 verifier", 8)

    salt = fixed("file salt", 16)
    name, size, last_modified = "café notes.txt", CHUNK_SIZE + 100, 1700000000123
    the_file_id = file_id(salt, name, size, last_modified)
    epoch = 0
    stream_nonce = fixed("stream nonce", 16)
    data_key = keys.data_key(the_file_id, epoch, stream_nonce)

    aad_examples = []
    three_chunks = 2 * CHUNK_SIZE + 5
    # The middle example uses epoch 1, so that the epoch field is seen non-zero.
    for what, epoch_n, index, total in (
        ("first of 3", 0, 0, three_chunks),
        ("middle of 3", 1, 1, three_chunks),
        ("final of 3", 0, 2, three_chunks),
        ("empty file", 0, 0, 0),
    ):
        final = index == chunk_count(total) - 1
        aad_examples.append(
            {
                "what": what,
                "file_id": the_file_id.hex(),
                "epoch": epoch_n,
                "index": index,
                "final": final,
                "total_size": total,
                "aad": data_aad(the_file_id, epoch_n, index, final, total).hex(),
            }
        )

    full_frame = seal_chunk(data_key, the_file_id, epoch, 0, size, file_bytes(0, CHUNK_SIZE))
    final_plain = file_bytes(CHUNK_SIZE, expected_length(size, 1))
    final_frame = seal_chunk(data_key, the_file_id, epoch, 1, size, final_plain)
    empty_frame = seal_chunk(data_key, the_file_id, epoch, 0, 0, b"")

    offer = {
        "t": "offer",
        "file_id": b64u(the_file_id),
        "name": name,
        "size": size,
        "type": "text/plain",
        "lastModified": last_modified,
        "chunk": CHUNK_SIZE,
        "epoch": epoch,
        "nonce": b64u(stream_nonce),
    }
    ack = {"t": "ack", "through": 0, "window": 16}

    return {
        "description": (
            "Shared test vectors of the Tube relay's end-to-end layer (TRP/1, tube/1): "
            "generated by tests/vectors/make_vectors.py, described in tests/vectors/README.md. "
            "Bytes are lower-case hex unless a field says otherwise."
        ),
        "cpace": {"word": word, "link": link},
        "keys": {
            "isk": isk.hex(),
            "sid": sid.hex(),
            "prk": prk.hex(),
            "confirm_s": keys.confirm_s.hex(),
            "confirm_r": keys.confirm_r.hex(),
            "k_ctrl_s2r": keys.k_ctrl_s2r.hex(),
            "k_ctrl_r2s": keys.k_ctrl_r2s.hex(),
            "resume_secret": resume_secret.hex(),
            "rid": keys.rid.hex(),
            "verifier_bytes": verifier_bytes.hex(),
            "verifier": keys.verifier,
        },
        "commitment": {
            "message_s": sender.message.hex(),
            "commitment": commitment(sender.message).hex(),
        },
        "confirm": {
            "transcript": sender.transcript.hex(),
            "tag_s": confirm_tag(keys.confirm_s, sender.transcript).hex(),
            "tag_r": confirm_tag(keys.confirm_r, sender.transcript).hex(),
        },
        "file_id": {
            "salt": salt.hex(),
            "name": name,
            "size": size,
            "last_modified_ms": last_modified,
            "encoded": lv_cat(
                salt, name.encode(), size.to_bytes(8, "big"), last_modified.to_bytes(8, "big")
            ).hex(),
            "file_id": the_file_id.hex(),
        },
        "data_key": {
            "file_id": the_file_id.hex(),
            "epoch": epoch,
            "stream_nonce": stream_nonce.hex(),
            "key": data_key.hex(),
        },
        "data_aad": aad_examples,
        "chunks": {
            "key": data_key.hex(),
            "file_id": the_file_id.hex(),
            "epoch": epoch,
            "total_size": size,
            "content_rule": "the byte at file offset o is o % 251",
            "full": {
                "index": 0,
                "plaintext_length": CHUNK_SIZE,
                "frame_length": len(full_frame),
                "frame_sha256": hashlib.sha256(full_frame).hexdigest(),
                "frame_head": full_frame[:64].hex(),
            },
            "final": {
                "index": 1,
                "plaintext": final_plain.hex(),
                "frame": final_frame.hex(),
            },
            "empty_file": {
                "total_size": 0,
                "index": 0,
                "frame": empty_frame.hex(),
            },
        },
        "ctrl": [
            {
                "direction": "s2r",
                "key": keys.k_ctrl_s2r.hex(),
                "counter": 0,
                "json": offer,
                "plaintext": ctrl_plaintext(offer).hex(),
                "frame": seal_ctrl(keys.k_ctrl_s2r, 0, offer).hex(),
            },
            {
                "direction": "r2s",
                "key": keys.k_ctrl_r2s.hex(),
                "counter": 7,
                "json": ack,
                "plaintext": ctrl_plaintext(ack).hex(),
                "frame": seal_ctrl(keys.k_ctrl_r2s, 7, ack).hex(),
            },
        ],
    }


def render() -> str:
    """The file's exact text: two-space indented JSON, non-ASCII kept, a final newline."""
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """Write the file, or with ``--check`` report whether it is up to date."""
    text = render()
    if "--check" in argv:
        current = PATH.read_text(encoding="utf-8") if PATH.exists() else ""
        if current != text:
            print(f"{PATH} is stale: run python tests/vectors/make_vectors.py")
            return 1
        return 0
    PATH.write_text(text, encoding="utf-8", newline="\n")
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
