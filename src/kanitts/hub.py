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
    if looks_local(repo_id):
        raise ModelLoadError(f"file not found: {p} (no such folder)")
    if repo_id.count("/") != 1:
        raise ModelLoadError(f"model {repo_id!r}: no such folder, and not a hub id (owner/name)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns))
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one clear line
        raise ModelLoadError(
            f"could not fetch model {repo_id!r} from the Hugging Face hub and it is not "
            f"in the local cache ({type(exc).__name__}); download it first or pass a local folder"
        ) from None


def looks_local(id_or_path: str | Path) -> bool:
    """Whether a model argument is a path, never a hub id: it starts with ``/``, ``./``,
    ``../``, ``~`` (or ``\\``), or is a bare ``.``/``..``, or ends in a file suffix such as
    ``.nemo``."""
    s = str(id_or_path)
    return (s.startswith(("/", "./", "../", "~", "\\")) or s in (".", "..")
            or Path(s).suffix.lower() in (".nemo", ".safetensors", ".json"))


#: Files that make a folder a loadable model (config first, then any tokenizer file).
_MODEL_CONFIG = "config.json"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def resolve_model_dir(id_or_path: str | Path) -> Path:
    """:func:`resolve_dir` for a KaniTTS model, checked to hold ``config.json`` and a tokenizer.

    Raises :class:`ModelLoadError` ``no tokenizer/config.json in DIR``, naming a sub-folder
    that has them when there is one (a ``make-tiny`` folder passed instead of ``DIR/model``)."""
    folder = resolve_dir(id_or_path)
    has_config = (folder / _MODEL_CONFIG).is_file()
    has_tokenizer = any((folder / f).is_file() for f in _TOKENIZER_FILES)
    if has_config and has_tokenizer:
        return folder
    missing = "/".join(x for x, ok in (("tokenizer", has_tokenizer), (_MODEL_CONFIG, has_config)) if not ok)
    hint = ""
    subs = sorted(d for d in folder.iterdir() if d.is_dir() and (d / _MODEL_CONFIG).is_file())
    if subs:
        hint = f"; did you mean {subs[0]}?"
    raise ModelLoadError(f"no {missing} in {folder}{hint}")


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
    if looks_local(id_or_path):
        raise ModelLoadError(f"file not found: {p}")
    folder = resolve_dir(id_or_path, allow_patterns=[f"*{suffix}"])
    found = sorted(folder.glob(f"*{suffix}"))
    if not found:
        raise ModelLoadError(f"hub repo {id_or_path!r} has no *{suffix} file")
    return found[0]
