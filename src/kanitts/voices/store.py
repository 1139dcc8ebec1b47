"""Persistent custom voices: a directory with one file per voice, plus read-only voices
pre-loaded from embedding files named in config.

Rules
-----
* A voice belongs to the owner that created it (``Requester.owner``: a hash of the API
  key, or None when keys are off, so that everyone shares one namespace).
* A requester sees and uses its own voices, shared voices and pre-loaded voices; an admin
  sees all. Voices one may not see are reported as not found (existence is not leaked).
* Only the owner or an admin deletes a voice; only an admin marks a voice shared (at
  creation or later). Pre-loaded voices cannot be deleted or changed through the store.
* Names are case-insensitive and unique per owner, and no uploaded voice may take the name
  of a pre-loaded one. Resolving a name tries the requester's own voices, then pre-loaded
  voices, then shared voices (several shared voices of one name: use the id).
* :class:`VoiceStoreLimits` caps the number of uploaded voices, in all and per owner.

Durability: each voice is written with :func:`~kanitts.voices.files.atomic_write`, so a
crash mid-write loses at most the voice being written and never damages another; files
that cannot be read on open are skipped with a warning, never deleted. One process should
own a directory (writes are serialised by a lock within the process).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from kanitts.voices.errors import (
    VoiceAmbiguousError,
    VoiceInvalidError,
    VoiceLimitError,
    VoiceNameConflictError,
    VoiceNotFoundError,
    VoicePermissionError,
)
from kanitts.voices.files import atomic_write, fsync_dir, read_embedding_file, remove_stale_temp_files
from kanitts.voices.names import name_key, validate_name
from kanitts.voices.records import (
    VOICE_SUFFIX,
    Requester,
    Voice,
    VoiceStoreLimits,
    as_embedding,
    read_voice_file,
    to_bytes,
)

logger = logging.getLogger(__name__)

_ID_PREFIX = "voice_"


class VoiceStore:
    """Custom voices kept in ``directory`` (created if missing). ``dim``: embedding size
    (the model's ``speaker_emb_dim``, 128 for KaniTTS-2). Thread-safe; methods do file I/O, so async callers run them in
    a worker thread."""

    def __init__(
        self,
        directory: str | Path,
        dim: int,
        limits: VoiceStoreLimits = VoiceStoreLimits(),
    ) -> None:
        self.directory = Path(directory).expanduser()
        self.dim = dim
        self.limits = limits
        self._lock = threading.Lock()
        self._voices: dict[str, Voice] = {}
        self._files: dict[str, Voice] = {}  # pre-loaded, by id
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        remove_stale_temp_files(self.directory)
        for path in sorted(self.directory.glob(f"*{VOICE_SUFFIX}")):
            try:
                voice = read_voice_file(path, dim)
            except VoiceInvalidError as exc:
                logger.warning("voices: skipping %s", exc)
                continue
            self._voices[voice.id] = voice
        logger.info("voices: %d stored voice(s) in %s", len(self._voices), self.directory)

    # ---- reading -------------------------------------------------------------------
    @staticmethod
    def _visible(voice: Voice, who: Requester) -> bool:
        return voice.source == "file" or voice.shared or who.admin or voice.owner == who.owner

    def list(self, who: Requester) -> list[Voice]:
        """Voices ``who`` may use: pre-loaded first (by name), then stored ones, oldest
        first."""
        with self._lock:
            files = sorted(self._files.values(), key=lambda v: v.name_key)
            stored = sorted(self._voices.values(), key=lambda v: (v.created_at, v.id))
        return files + [v for v in stored if self._visible(v, who)]

    def get(self, voice_id: str, who: Requester) -> Voice:
        """The voice with this id; :class:`VoiceNotFoundError` if absent or not visible."""
        with self._lock:
            voice = self._voices.get(voice_id) or self._files.get(voice_id)
        if voice is None or not self._visible(voice, who):
            raise VoiceNotFoundError(f"no voice with id {voice_id!r}")
        return voice

    def find(self, name: str, who: Requester) -> Voice:
        """Resolve a name (case-insensitive): the requester's own voice, else a
        pre-loaded one, else the one shared voice of that name. Raises
        :class:`VoiceNotFoundError` or :class:`VoiceAmbiguousError`."""
        key = name_key(name)
        with self._lock:
            stored = [v for v in self._voices.values() if v.name_key == key]
            files = [v for v in self._files.values() if v.name_key == key]
        own = sorted((v for v in stored if v.owner == who.owner), key=lambda v: v.created_at)
        if own:
            return own[0]
        if files:
            return files[0]
        shared = [v for v in stored if v.shared]
        if len(shared) > 1:
            raise VoiceAmbiguousError(f"several shared voices are named {name!r}; use the voice id")
        if shared:
            return shared[0]
        raise VoiceNotFoundError(f"no voice named {name!r}")

    def embedding(self, name: str, who: Requester) -> np.ndarray:
        """``find(name, who).embedding``: a lookup for :func:`kanitts.voices.blend.blend_voices`."""
        return self.find(name, who).embedding

    # ---- writing -------------------------------------------------------------------
    def create(self, name: str, embedding: np.ndarray, who: Requester, shared: bool = False) -> Voice:
        """Store a new voice owned by ``who.owner`` and return it (new random id
        ``voice_<24 hex>``). ``embedding``: ``[D]`` or ``[1, D]`` floats. Raises
        :class:`VoiceInvalidError` (name/embedding), :class:`VoicePermissionError`
        (``shared`` without admin), :class:`VoiceNameConflictError`,
        :class:`VoiceLimitError`, or ``OSError`` when the write fails (nothing stored)."""
        clean = validate_name(name, self.limits.max_name_chars)
        vector = as_embedding(embedding, self.dim)
        if shared and not who.admin:
            raise VoicePermissionError("only an admin key can share a voice")
        key = name_key(clean)
        with self._lock:
            if any(v.name_key == key for v in self._files.values()):
                raise VoiceNameConflictError(f"{clean!r} is the name of a built-in voice")
            owned = [v for v in self._voices.values() if v.owner == who.owner]
            if any(v.name_key == key for v in owned):
                raise VoiceNameConflictError(f"you already have a voice named {clean!r}")
            if len(self._voices) >= self.limits.max_voices:
                raise VoiceLimitError(f"the server holds its maximum of {self.limits.max_voices} voices")
            if len(owned) >= self.limits.max_voices_per_owner:
                raise VoiceLimitError(f"you have the maximum of {self.limits.max_voices_per_owner} voices")
            voice = Voice(id=_ID_PREFIX + secrets.token_hex(12), name=clean, embedding=vector,
                          owner=who.owner, shared=shared, created_at=round(time.time(), 3))
            atomic_write(self._path(voice.id), to_bytes(voice))
            self._voices[voice.id] = voice
        logger.info("voices: created %s (%r)", voice.id, voice.name)
        return voice

    def set_shared(self, voice_id: str, shared: bool, who: Requester) -> Voice:
        """Mark a stored voice shared or private (admin only); returns the updated voice.
        Raises :class:`VoicePermissionError` or :class:`VoiceNotFoundError`."""
        if not who.admin:
            raise VoicePermissionError("only an admin key can share a voice")
        with self._lock:
            voice = self._voices.get(voice_id)
            if voice is None:
                if voice_id in self._files:
                    raise VoicePermissionError("built-in voices cannot be changed")
                raise VoiceNotFoundError(f"no voice with id {voice_id!r}")
            updated = Voice(id=voice.id, name=voice.name, embedding=voice.embedding, owner=voice.owner,
                            shared=shared, created_at=voice.created_at)
            atomic_write(self._path(voice_id), to_bytes(updated))
            self._voices[voice_id] = updated
        return updated

    def delete(self, voice_id: str, who: Requester) -> None:
        """Delete a stored voice (its owner or an admin). Raises
        :class:`VoiceNotFoundError` (absent or not visible) or
        :class:`VoicePermissionError` (visible but not yours, or pre-loaded)."""
        voice = self.get(voice_id, who)
        if voice.source == "file":
            raise VoicePermissionError("built-in voices cannot be deleted")
        if not (who.admin or voice.owner == who.owner):
            raise VoicePermissionError("only the key that created a voice (or an admin) can delete it")
        with self._lock:
            if self._voices.pop(voice_id, None) is None:
                raise VoiceNotFoundError(f"no voice with id {voice_id!r}")
            self._path(voice_id).unlink(missing_ok=True)
            fsync_dir(self.directory)
        logger.info("voices: deleted %s (%r)", voice_id, voice.name)

    # ---- pre-loaded files ----------------------------------------------------------
    def preload(self, files: Mapping[str, str | Path] | Iterable[str | Path]) -> list[Voice]:
        """Add read-only shared voices from ``.pt``/``.npy`` embedding files: a mapping
        name -> path, or paths (named by file stem). Their ids are stable
        (``voice_file_<hash of the name>``). Raises :class:`VoiceInvalidError` for a bad
        file or name, :class:`VoiceNameConflictError` for a name given twice."""
        items = list(files.items()) if isinstance(files, Mapping) else [(Path(p).stem, p) for p in files]
        added = []
        for name, path in items:
            clean = validate_name(name, self.limits.max_name_chars)
            key = name_key(clean)
            vector = read_embedding_file(path, self.dim)
            digest = hashlib.sha256(key.encode()).hexdigest()[:16]
            voice = Voice(id=f"{_ID_PREFIX}file_{digest}", name=clean, embedding=vector,
                          shared=True, source="file")
            with self._lock:
                if voice.id in self._files:
                    raise VoiceNameConflictError(f"voice file name {clean!r} is given twice")
                self._files[voice.id] = voice
            added.append(voice)
            logger.info("voices: pre-loaded %r from %s", clean, path)
        return added

    def _path(self, voice_id: str) -> Path:
        return self.directory / f"{voice_id}{VOICE_SUFFIX}"
