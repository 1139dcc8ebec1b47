"""Resolve a model argument (hub id or local path) to files on disk.

Users pass either a local folder/file or a Hugging Face hub id, exactly as with
transformers. Offline with nothing cached must fail with one clear line, so every
failure here becomes a :class:`ModelLoadError` naming what could not be fetched.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model or codec could not be found or fetched; the message is user-facing."""


def resolve_dir(id_or_path: str | Path, allow_patterns: list[str] | None = None) -> Path:
    """A local folder for a model: the path itself, or a hub snapshot (cache first)."""
    p = Path(id_or_path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelLoadError(f"{id_or_path} is a file, expected a model folder")
        return p
    repo_id = str(id_or_path)
    if repo_id.count("/") != 1 or repo_id.startswith(("/", ".", "~")):
        raise ModelLoadError(f"model {repo_id!r}: no such folder, and not a hub id (owner/name)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns))
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one clear line
        raise ModelLoadError(
            f"could not fetch model {repo_id!r} from the Hugging Face hub and it is not "
            f"in the local cache ({type(exc).__name__}); download it first or pass a local folder"
        ) from None


def resolve_file(id_or_path: str | Path, suffix: str) -> Path:
    """A single file (e.g. a ``.nemo`` archive): a local file, a folder holding one, or
    the first ``*suffix`` file of a hub repo."""
    p = Path(id_or_path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        found = sorted(p.glob(f"*{suffix}"))
        if not found:
            raise ModelLoadError(f"no *{suffix} file in folder {p}")
        return found[0]
    folder = resolve_dir(id_or_path, allow_patterns=[f"*{suffix}"])
    found = sorted(folder.glob(f"*{suffix}"))
    if not found:
        raise ModelLoadError(f"hub repo {id_or_path!r} has no *{suffix} file")
    return found[0]
