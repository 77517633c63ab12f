"""The receiver's files and the sender's salt: safe names, the partial file and its sidecar,
the final name that never overwrites, and the file-id salt kept between runs.

The partial download is ``.<name>.tube-part`` beside a ``.json`` sidecar that counts only
chunks already ``fsync``ed, so a later session (after a relay restart, with a new code) can
continue from what the disk really holds.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import secrets
import unicodedata
from pathlib import Path

from ..e2e.framing import CHUNK_SIZE
from ..e2e.peer import Offer
from .errors import TransferError

__all__ = ["Partial", "load_salt", "partial_paths", "safe_name"]

# How often the receiver makes its progress durable (fsync, then the sidecar): 16 MiB.
_SYNC_EVERY = 64
# Room left in a 255-byte file name for ".", ".tube-part.json" and " (999)".
_MAX_NAME_BYTES = 200
_PART_SUFFIX = ".tube-part"
_SIDECAR_VERSION = 1
_SALT_FILE = "file-id-salt"

_WINDOWS_RESERVED = re.compile(r"(?i)(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?")
_UNSAFE_CHARS = str.maketrans({c: "_" for c in '<>:"|?*'})


def safe_name(name: str) -> str:
    """Return a file name safe to create from a name the sender chose.

    Keeps the last path component only (``/`` and ``\\`` both separate), drops control and
    format characters (bidirectional overrides that disguise an extension included), replaces
    characters Windows refuses, strips leading dots (no hidden files, no ``..``) and trailing
    dots and spaces, caps the name at 200 UTF-8 bytes keeping the extension, and never returns
    an empty or reserved name (``file`` instead).
    """
    base = re.split(r"[/\\]", name)[-1]
    base = "".join(c for c in base if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp"))
    base = base.translate(_UNSAFE_CHARS).strip().lstrip(".").strip().rstrip(". ")
    if len(base.encode()) > _MAX_NAME_BYTES:
        stem, dot, ext = base.rpartition(".")
        if not dot or not stem or len(ext.encode()) > 20:
            stem, ext = base, ""
        budget = _MAX_NAME_BYTES - len(ext.encode()) - (1 if ext else 0)
        stem = stem.encode()[:budget].decode(errors="ignore").rstrip(". ")
        base = f"{stem}.{ext}" if ext else stem
    if not base or _WINDOWS_RESERVED.fullmatch(base):
        base = f"file{'' if not base else '-' + base}"
    return base


def partial_paths(directory: Path, name: str) -> tuple[Path, Path]:
    """``(partial file, sidecar)`` for a download of ``name`` (already sanitised) in
    ``directory``: ``.<name>.tube-part`` and ``.<name>.tube-part.json``."""
    part = directory / f".{name}{_PART_SUFFIX}"
    return part, part.with_name(part.name + ".json")


class Partial:
    """A download in progress: the partial file and its sidecar.

    The sidecar counts the chunks that are both written and ``fsync``ed, so it never claims
    bytes the disk may not hold after a crash.
    """

    def __init__(self, directory: Path, name: str, offer: Offer) -> None:
        self.directory = directory
        self.name = name
        self.offer = offer
        self.part, self.sidecar = partial_paths(directory, name)
        self.file: io.BufferedIOBase | None = None
        self.written = 0  # chunks written, from the start of the file
        self.synced = 0  # of which made durable

    def chunks_on_disk(self) -> int:
        """Chunks of this very file (same id, name and size) kept by an earlier session."""
        try:
            meta = json.loads(self.sidecar.read_text(encoding="utf-8"))
            part_size = self.part.stat().st_size
        except (OSError, ValueError):
            return 0
        offer = self.offer
        if not isinstance(meta, dict) or meta.get("v") != _SIDECAR_VERSION:
            return 0
        same = (
            meta.get("file_id") == _b64u(offer.file_id)
            and meta.get("name") == offer.name
            and meta.get("size") == offer.size
            and meta.get("chunk") == CHUNK_SIZE
        )
        chunks = meta.get("chunks")
        if not same or type(chunks) is not int or not 0 <= chunks <= offer.chunks:
            return 0
        if part_size < min(offer.size, chunks * CHUNK_SIZE):
            return 0
        return chunks

    def open(self, resume_from: int) -> None:
        """Start writing after the ``resume_from`` chunks kept (0: a new file)."""
        # Open until close(), finish() or discard().
        if resume_from:
            file: io.BufferedIOBase = open(self.part, "r+b")  # noqa: SIM115
        else:
            file = open(self.part, "wb")  # noqa: SIM115
        file.truncate(min(self.offer.size, resume_from * CHUNK_SIZE))
        self.file = file
        self.written = self.synced = resume_from
        self._write_sidecar(resume_from)

    def write(self, index: int, data: bytes) -> None:
        """Write chunk ``index`` (the next one); make progress durable every 16 MiB."""
        file = self.file
        assert file is not None and index == self.written
        file.seek(index * CHUNK_SIZE)
        file.write(data)
        self.written = index + 1
        if self.written - self.synced >= _SYNC_EVERY:
            self._sync()

    def _sync(self) -> None:
        file = self.file
        assert file is not None
        file.flush()
        os.fsync(file.fileno())
        self.synced = self.written
        self._write_sidecar(self.synced)

    def _write_sidecar(self, chunks: int) -> None:
        meta = {
            "v": _SIDECAR_VERSION,
            "file_id": _b64u(self.offer.file_id),
            "name": self.offer.name,
            "size": self.offer.size,
            "chunk": CHUNK_SIZE,
            "chunks": chunks,
        }
        temporary = self.sidecar.with_name(self.sidecar.name + ".tmp")
        temporary.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(temporary, self.sidecar)

    def finish(self) -> Path:
        """Make the file durable and give it its final name, never over an existing file."""
        file = self.file
        assert file is not None
        file.flush()
        os.fsync(file.fileno())
        file.close()
        self.file = None
        final = _move_to_free_name(self.part, self.directory, self.name)
        with contextlib.suppress(FileNotFoundError):
            self.sidecar.unlink()
        _sync_directory(self.directory)
        return final

    def close(self) -> None:
        """Stop; keep what was written (durably) for a later session."""
        if self.file is not None:
            # A full disk fails both; the sidecar then keeps its last durable count.
            with contextlib.suppress(OSError):
                self._sync()
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None

    def discard(self) -> None:
        """Stop and delete the partial output (its content cannot be trusted)."""
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
        for path in (self.part, self.sidecar):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _move_to_free_name(source: Path, directory: Path, name: str) -> Path:
    """Move ``source`` to ``name`` in ``directory``, or ``stem (1).ext``, ...: by a hard link
    (which fails if the name exists, so nothing is overwritten, even a file created just now)
    and unlinking ``source``."""
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    for n in range(10_000):
        candidate = directory / (name if n == 0 else f"{stem} ({n}){dot}{ext}")
        try:
            os.link(source, candidate)
        except FileExistsError:
            continue
        except OSError:
            # No hard links on this file system: rename if the name is still free (a small
            # race with a file created in between, which Windows' rename refuses anyway).
            if candidate.exists():
                continue
            os.rename(source, candidate)
            return candidate
        source.unlink()
        return candidate
    raise TransferError(f"no free file name for {name} in {directory}")


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_salt(state_dir: str | os.PathLike[str] | None = None) -> bytes:
    """Return this user's 16-byte file-id salt, creating it on first use.

    Kept in ``state_dir``, else ``$TUBE_STATE_DIR``, else ``$XDG_STATE_HOME/tube``, else
    ``~/.local/state/tube`` (file ``file-id-salt``, mode 0600), so sending the same file again
    gives the same file id and the receiver can continue (relay-design §5.9). If it cannot be
    stored, a fresh random salt is returned (that transfer cannot be continued later).
    """
    if state_dir is None:
        state_dir = os.environ.get("TUBE_STATE_DIR") or os.path.join(
            os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state"),
            "tube",
        )
    path = Path(state_dir) / _SALT_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
        if re.fullmatch(r"[0-9a-f]{32}", text):
            return bytes.fromhex(text)
    except (OSError, ValueError):
        pass
    salt = secrets.token_bytes(16)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(salt.hex() + "\n")
    except OSError:
        pass
    return salt


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
