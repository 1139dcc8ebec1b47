"""Durable file writes and the official server's embedding files.

:func:`atomic_write` gives all-or-nothing files: a crash at any point leaves either the
old content or the new, never a mix (at worst an orphan ``.*.tmp`` file, which
:func:`remove_stale_temp_files` deletes when a store opens).
:func:`read_embedding_file` reads the embedding files that KaniTTS-2's official package
uses for voices: a ``torch.save``'d tensor of shape ``[128]`` or ``[1, 128]`` (``.pt``),
or the same array saved by numpy (``.npy``).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import numpy as np

from kanitts.voices.errors import VoiceInvalidError
from kanitts.voices.records import as_embedding

logger = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
EMBEDDING_FILE_SUFFIXES = (".pt", ".npy")


def fsync_dir(directory: Path) -> None:
    """Make a rename/unlink in ``directory`` durable (no-op where directories cannot be
    opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably: a temp file in the same
    directory, fsync, ``os.replace``, fsync of the directory. On an exception the temp
    file is removed and ``path`` is unchanged."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_stale_temp_files(directory: Path) -> int:
    """Delete temp files a crash left behind in ``directory``; returns how many."""
    removed = 0
    for tmp in directory.glob(f".*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        removed += 1
    if removed:
        logger.warning("voices: removed %d unfinished write(s) in %s", removed, directory)
    return removed


def read_embedding_file(path: str | Path, dim: int) -> np.ndarray:
    """A ``.pt`` (tensor ``[D]`` or ``[1, D]``, loaded with ``weights_only``) or ``.npy``
    embedding file -> read-only float32 ``[D]``. Raises :class:`VoiceInvalidError` naming
    the file when it is missing, of another type or shape, or not finite."""
    p = Path(path).expanduser()
    if p.suffix not in EMBEDDING_FILE_SUFFIXES:
        raise VoiceInvalidError(f"voice file {p}: expected one of {', '.join(EMBEDDING_FILE_SUFFIXES)}")
    try:
        if p.suffix == ".npy":
            value: object = np.load(p, allow_pickle=False)
        else:
            import torch

            value = torch.load(p, map_location="cpu", weights_only=True)
            if not isinstance(value, torch.Tensor):
                raise VoiceInvalidError(f"voice file {p}: holds a {type(value).__name__}, not a tensor")
            value = value.detach().float().numpy()
    except VoiceInvalidError:
        raise
    except Exception as exc:  # noqa: BLE001 - missing, truncated or foreign files alike
        raise VoiceInvalidError(f"voice file {p}: cannot be read ({type(exc).__name__}: {exc})") from None
    return as_embedding(value, dim, f"voice file {p}")
