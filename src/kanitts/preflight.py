"""Checks of the effective settings against this machine, before anything loads.

``kanitts serve`` and ``kanitts say`` call :func:`check_start` first, so that a person sees
one actionable error (or a warning) instead of tracebacks from the loading code:

* every model the settings need (each active language's, the codec, and for KaniTTS-2 the
  speaker encoder) is on disk or
  fetchable; the ones that are not are named together in one :class:`~kanitts.hub.ModelLoadError`
  with the flag and config key that take a local copy and a command to download them;
* ``engine.gpus`` names CUDA devices that exist (:class:`~kanitts.config.ConfigError`);
* engine options the chosen backend does not honour are named in one warning.

Resolving a hub id here downloads it when it is not cached (the loaders would do the same a
moment later and then find it in the cache).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kanitts.config import ConfigError, EngineConfig, Settings
from kanitts.engine.factory import HONOURED_ENGINE_OPTIONS, backend_kind
from kanitts.hub import ModelLoadError, resolve_dir, resolve_file, resolve_model_dir
from kanitts.models import read_kanitts2

logger = logging.getLogger(__name__)

#: engine.* keys that pick the backend itself: never reported as ignored.
_ALWAYS_HONOURED = frozenset({"backend"})


@dataclass(frozen=True)
class _Need:
    """One model the settings need: its id or path, the config key and the flag that set it."""

    what: str
    id_or_path: str
    key: str
    flag: str
    suffix: str | None = None  # a single file (the codec .nemo); None: a model folder


def _needs(settings: Settings) -> list[_Need]:
    needs = [
        _Need(f"model for language {code}", settings.languages[code].model, f"languages.{code}.model",
              "--model DIR --language " + code)
        for code in settings.active_languages()
    ]
    needs.append(_Need("codec", settings.codec.model, "codec.model", "--codec FILE.nemo", ".nemo"))
    return needs


def _looks_like_hub_id(s: str) -> bool:
    return s.count("/") == 1 and not s.startswith(("/", ".", "~"))


def check_models(settings: Settings) -> None:
    """Resolve every model the settings need (downloading what is not cached).

    Raises :class:`ModelLoadError` naming every model that could not be had: its first line
    lists them all; the next lines give, per model, the flag and config key for a local
    copy, then one command that downloads the hub ones."""
    failed: list[tuple[_Need, str]] = []
    kanitts2 = False
    for need in _needs(settings):
        try:
            if need.suffix is None:
                folder = resolve_model_dir(need.id_or_path)
                kanitts2 = kanitts2 or read_kanitts2(str(folder))[0] is not None
            else:
                resolve_file(need.id_or_path, need.suffix)
        except ModelLoadError as exc:
            failed.append((need, str(exc)))
    if kanitts2:  # voice cloning needs the speaker encoder as well
        need = _Need("speaker encoder", settings.voices.speaker_encoder, "voices.speaker_encoder",
                     "--speaker-encoder DIR")
        try:
            resolve_dir(need.id_or_path)
        except ModelLoadError as exc:
            failed.append((need, str(exc)))
    if not failed:
        return
    names = ", ".join(n.id_or_path for n, _ in failed)
    lines = [f"cannot load {names}"]
    for need, reason in failed:
        lines.append(f"  {need.what} {need.id_or_path}: {reason}")
        lines.append(f"    use a local copy: {need.flag} (config key {need.key})")
    hub_ids = [n.id_or_path for n, _ in failed if _looks_like_hub_id(n.id_or_path)]
    if hub_ids:
        cmds = " && ".join(f"hf download {i}" for i in hub_ids)
        lines.append(f"  download them while online: {cmds}")
        lines.append("    (huggingface_hub < 0.34: huggingface-cli download ...)")
    raise ModelLoadError("\n".join(lines))


def check_gpus(settings: Settings) -> None:
    """``engine.gpus`` names visible CUDA devices; :class:`ConfigError` otherwise (one line)."""
    gpus = settings.engine.gpus
    if not gpus:
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = ",".join(str(g) for g in gpus)
    if count == 0:
        raise ConfigError(f"--gpus {listed} (engine.gpus): no CUDA device is visible on this machine")
    missing = [g for g in gpus if not 0 <= g < count]
    if missing:
        raise ConfigError(
            f"--gpus {listed} (engine.gpus): no CUDA device {', '.join(map(str, missing))} "
            f"(this machine has {count}: 0-{count - 1})"
        )


def ignored_engine_options(settings: Settings) -> list[str]:
    """``engine.KEY = VALUE`` for each engine option set away from its default that the
    resolved backend does not honour (per :data:`HONOURED_ENGINE_OPTIONS`; a backend missing
    from that table is taken to honour everything)."""
    kind = backend_kind(settings)
    honoured = HONOURED_ENGINE_OPTIONS.get(kind)
    if honoured is None:
        return []
    defaults = EngineConfig()
    out = []
    for key in type(settings.engine).model_fields:
        if key in honoured or key in _ALWAYS_HONOURED:
            continue
        value = getattr(settings.engine, key)
        if value != getattr(defaults, key):
            out.append(f"engine.{key} = {value!r} (--{key.replace('_', '-')})")
    return out


def warn_ignored_options(settings: Settings) -> None:
    """One warning naming what the backend ignores (nothing when all is honoured)."""
    ignored = ignored_engine_options(settings)
    if ignored:
        logger.warning("the %s backend ignores %s", backend_kind(settings), "; ".join(ignored))


def check_start(settings: Settings) -> None:
    """Everything above, in order: GPUs, ignored options (warning), models."""
    check_gpus(settings)
    warn_ignored_options(settings)
    check_models(settings)
