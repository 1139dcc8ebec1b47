"""The voice record, who is asking, the store's limits, and a voice's on-disk form.

A stored voice is one ``<id>.safetensors`` file: the float32 ``[D]`` tensor
``embedding`` and, in the header's metadata, ``kanitts_voice`` (the format version) and
``meta`` (JSON: ``id``, ``name``, ``owner``, ``shared``, ``created_at``). One file per
voice means one atomic rename commits it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from kanitts.voices.errors import VoiceInvalidError
from kanitts.voices.names import name_key

FORMAT_VERSION = "1"
VOICE_SUFFIX = ".safetensors"
_TENSOR = "embedding"


@dataclass(frozen=True)
class Requester:
    """Who asks. ``owner``: a stable hash of the API key, or None when keys are off (then
    every caller is the same owner). ``admin``: may see, share and delete any voice."""

    owner: str | None = None
    admin: bool = False


@dataclass(frozen=True)
class VoiceStoreLimits:
    """Count and size limits of a :class:`~kanitts.voices.store.VoiceStore` (uploaded
    voices only; pre-loaded files do not count)."""

    max_voices: int = 1000
    max_voices_per_owner: int = 100
    max_name_chars: int = 64

    def __post_init__(self) -> None:
        if min(self.max_voices, self.max_voices_per_owner, self.max_name_chars) < 1:
            raise ValueError(f"voice store limits must be >= 1: {self}")


@dataclass(frozen=True)
class Voice:
    """A custom voice. ``embedding``: read-only float32 ``[D]``; ``created_at``: Unix
    seconds; ``source``: ``"upload"`` (stored in the directory) or ``"file"`` (pre-loaded
    from an embedding file named in config: shared, read-only, not persisted)."""

    id: str
    name: str
    embedding: np.ndarray = field(repr=False, compare=False)
    owner: str | None = None
    shared: bool = False
    created_at: float = 0.0
    source: Literal["upload", "file"] = "upload"

    @property
    def name_key(self) -> str:
        return name_key(self.name)

    def meta(self) -> dict[str, object]:
        """The JSON metadata (no embedding), as stored and as an API layer may show it."""
        return {"id": self.id, "name": self.name, "owner": self.owner, "shared": self.shared,
                "created_at": self.created_at}


def as_embedding(value: object, dim: int, what: str = "embedding") -> np.ndarray:
    """``[D]`` or ``[1, D]`` numbers -> a read-only float32 ``[D]`` copy; raises
    :class:`VoiceInvalidError` for another shape, size or non-finite values."""
    arr = np.array(value, dtype=np.float32)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != (dim,):
        raise VoiceInvalidError(f"{what} has shape {list(np.shape(value))}; expected [{dim}] or [1, {dim}]")
    if not np.all(np.isfinite(arr)):
        raise VoiceInvalidError(f"{what} has non-finite values")
    arr.setflags(write=False)
    return arr


def to_bytes(voice: Voice) -> bytes:
    """The voice's file content (safetensors with the metadata in its header)."""
    from safetensors.numpy import save

    meta = json.dumps(voice.meta(), sort_keys=True)
    return save({_TENSOR: np.ascontiguousarray(voice.embedding)},
                metadata={"kanitts_voice": FORMAT_VERSION, "meta": meta})


def read_voice_file(path: Path, dim: int) -> Voice:
    """Parse one stored voice; raises :class:`VoiceInvalidError` for a damaged file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            header = f.metadata() or {}
            if header.get("kanitts_voice") != FORMAT_VERSION:
                raise VoiceInvalidError(f"{path.name}: not a kanitts voice file (version {header.get('kanitts_voice')!r})")
            meta = json.loads(header["meta"])
            embedding = as_embedding(f.get_tensor(_TENSOR), dim, f"{path.name}: embedding")
        voice = Voice(id=str(meta["id"]), name=str(meta["name"]), embedding=embedding,
                      owner=None if meta["owner"] is None else str(meta["owner"]),
                      shared=bool(meta["shared"]), created_at=float(meta["created_at"]))
    except VoiceInvalidError:
        raise
    except Exception as exc:  # noqa: BLE001 - any damage (truncation, bad JSON) is one error
        raise VoiceInvalidError(f"{path.name}: unreadable voice file ({type(exc).__name__}: {exc})") from None
    if path.name != voice.id + VOICE_SUFFIX:
        raise VoiceInvalidError(f"{path.name}: holds voice id {voice.id!r}")
    return voice
