"""KaniTTS-2 on the native engine: detection, extra weights, frame-level positions, the speaker row.

KaniTTS-2 is an LFM2 with four changes (checked against the official ``kani-tts-2`` 0.0.5,
``kani_tts/model.py``):

* **detection**: its ``config.json`` carries ``audio_tokens_start``, ``tokens_per_frame``,
  ``audio_step``, ``use_learnable_rope``, ``alpha_min``, ``alpha_max``, ``speaker_emb_dim``
  (any of them, or the architecture ``KaniTTS2ForCausalLM``); missing ones take the
  reference's defaults (64410, 4, 1.0, False, 0.1, 2.0, 128);
* **speaker row**: a ``[speaker_emb_dim]`` embedding projected by
  ``model.speaker_emb_projection.weight`` (``[hidden, speaker_emb_dim]``, no bias) becomes
  one extra input row right after the first prompt token (later rows shift by one);
* **frame-level positions**: in a prompt, a token's position counts the text rows before it
  (+1 each) and the complete audio frames before it (+``audio_step`` each), ids
  ``>= audio_tokens_start`` being audio (:func:`frame_positions`). While generating, the
  reference feeds each new token at: its cache index if it is not audio; else the current
  frame position, which starts at the cache index of the first generated audio token and
  advances by ``audio_step`` at every ``tokens_per_frame``-th audio token
  (:meth:`Kani2Runtime.decode_positions`). Positions can be fractional (``audio_step`` 0.5);
* **learnable RoPE**: attention layer ``i`` multiplies its RoPE frequencies by
  ``alpha_min + (alpha_max - alpha_min) * sigmoid(w_i)``, ``w_i`` being
  ``model.learnable_rope_layers.{i}.alpha_weight`` (float32, as the reference computes it).

Where the reference and a clean design part ways we follow the reference's numbers, with two
deliberate exceptions: the speaker projection is always loaded from the checkpoint (the
reference's ``from_pretrained`` leaves it randomly initialised when ``use_learnable_rope`` is
off), and a prompt holding audio tokens *and* a speaker row gets frame-level positions (the
reference numbers that case 0, 1, 2, ...; our prompts never hold audio).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kanitts.engine.native.model import Lfm2
from kanitts.engine.native.spec import Lfm2Spec
from kanitts.engine.native.weights import _read_tensors, build_model
from kanitts.hub import ModelLoadError, resolve_dir
from kanitts.tokens import AUDIO_TOKEN_START, NUM_CODEBOOKS, PAD

logger = logging.getLogger(__name__)

#: The reference's model class name (``architectures`` in some configs).
ARCHITECTURE = "KaniTTS2ForCausalLM"
#: ``config.json`` keys only a KaniTTS-2 checkpoint has.
CONFIG_KEYS = ("audio_tokens_start", "tokens_per_frame", "audio_step", "use_learnable_rope", "alpha_min",
               "alpha_max", "speaker_emb_dim")
#: Tensor names (``model.`` prefix stripped).
PROJECTION_KEY = "speaker_emb_projection.weight"
ALPHA_KEY = "learnable_rope_layers.{}.alpha_weight"
#: Stand-in id of the speaker row in a spliced prompt: a non-audio id, so the row counts as text.
SPEAKER_PLACEHOLDER = PAD


@dataclass(frozen=True)
class Kani2Config:
    """The KaniTTS-2 keys of ``config.json`` (defaults: the reference's)."""

    audio_tokens_start: int = AUDIO_TOKEN_START
    tokens_per_frame: int = NUM_CODEBOOKS
    audio_step: float = 1.0
    use_learnable_rope: bool = False
    alpha_min: float = 0.1
    alpha_max: float = 2.0
    speaker_emb_dim: int = 128

    @classmethod
    def detect(cls, cfg: dict[str, Any]) -> Kani2Config | None:
        """The KaniTTS-2 settings of a config dict, or None for a v1 (plain LFM2) config.
        Raises ValueError on out-of-range values."""
        archs = cfg.get("architectures") or []
        if not any(k in cfg for k in CONFIG_KEYS) and ARCHITECTURE not in archs:
            return None
        d = cls()
        out = cls(
            audio_tokens_start=int(cfg.get("audio_tokens_start") or d.audio_tokens_start),
            tokens_per_frame=int(cfg.get("tokens_per_frame") or d.tokens_per_frame),
            audio_step=float(cfg.get("audio_step") or d.audio_step),
            use_learnable_rope=bool(cfg.get("use_learnable_rope", d.use_learnable_rope)),
            alpha_min=float(cfg.get("alpha_min", d.alpha_min)),
            alpha_max=float(cfg.get("alpha_max", d.alpha_max)),
            speaker_emb_dim=int(cfg.get("speaker_emb_dim") or d.speaker_emb_dim),
        )
        if out.tokens_per_frame < 1 or out.speaker_emb_dim < 1 or not out.audio_step > 0:
            raise ValueError(f"invalid KaniTTS-2 settings: {out}")
        if out.alpha_min > out.alpha_max:
            raise ValueError(f"alpha_min {out.alpha_min} > alpha_max {out.alpha_max}")
        return out

    def alpha(self, weight: torch.Tensor) -> float:
        """A layer's RoPE frequency scale from its learned ``alpha_weight`` (float32 math,
        the reference's order of operations)."""
        w = weight.detach().float().cpu().reshape(())
        return float(self.alpha_min + (self.alpha_max - self.alpha_min) * torch.sigmoid(w))


def frame_positions(ids: torch.Tensor, cfg: Kani2Config) -> torch.Tensor:
    """Frame-level positions ``[n, L]`` float32 of token rows ``ids`` ``[n, L]`` int64:
    text rows before a row count 1 each, complete audio frames before it ``audio_step`` each."""
    is_audio = ids >= cfg.audio_tokens_start
    zeros = torch.zeros(ids.shape[0], 1, dtype=torch.int64, device=ids.device)
    text_before = torch.cat([zeros, (~is_audio).long()], 1).cumsum(1)[:, :-1]
    audio_before = torch.cat([zeros, is_audio.long()], 1).cumsum(1)[:, :-1]
    return (text_before + (audio_before // cfg.tokens_per_frame) * cfg.audio_step).float()


def splice_speaker(prompt: Sequence[int], with_speaker: bool) -> list[int]:
    """The prompt's rows: ``[p0, SPEAKER_PLACEHOLDER, p1, ...]`` with a speaker, else the prompt."""
    ids = list(prompt)
    return [ids[0], SPEAKER_PLACEHOLDER, *ids[1:]] if with_speaker and ids else ids


@dataclass
class Kani2Weights:
    """What a KaniTTS-2 checkpoint adds to its LFM2: the config and the speaker projection
    ``[hidden, speaker_emb_dim]`` (model dtype, on the model's device)."""

    config: Kani2Config
    projection: torch.Tensor

    def runtime(self, slots: int) -> Kani2Runtime:
        return Kani2Runtime(self, slots)


class Kani2Runtime:
    """Per-engine KaniTTS-2 state: builds prefill rows (speaker row, positions) and gives each
    decode step its positions from per-slot frame state ``frame_pos [S] float32`` and
    ``audio_count [S] int64`` (audio tokens fed so far), all on the model's device."""

    def __init__(self, weights: Kani2Weights, slots: int) -> None:
        self.cfg = weights.config
        self.projection = weights.projection
        dev = weights.projection.device
        self.frame_pos = torch.zeros(slots, dtype=torch.float32, device=dev)
        self.audio_count = torch.zeros(slots, dtype=torch.int64, device=dev)

    @property
    def speaker_dim(self) -> int:
        return self.cfg.speaker_emb_dim

    def project(self, speakers: torch.Tensor) -> torch.Tensor:
        """Speaker rows ``[n, H]`` (model dtype) from embeddings ``[n, speaker_emb_dim]``."""
        return F.linear(speakers.to(self.projection.device, self.projection.dtype), self.projection)

    def prefill_inputs(self, prompts: Sequence[Sequence[int]], speakers: Sequence[torch.Tensor | None],
                       min_width: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``(ids [n, L] int64, lengths [n] int64)`` on the host (rows right-padded to
        ``L = max(longest row, min_width)``, the speaker row spliced in where a request has
        one) and the device keyword arguments of :meth:`Lfm2.prefill`: ``positions``,
        ``embeds`` ``[n, 1, H]``, ``embeds_mask``."""
        rows = [splice_speaker(p, s is not None) for p, s in zip(prompts, speakers)]
        n, longest = len(rows), max(min_width, *(len(r) for r in rows))
        ids = torch.full((n, longest), SPEAKER_PLACEHOLDER, dtype=torch.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
        lens = torch.tensor([len(r) for r in rows], dtype=torch.int64)
        mask = torch.zeros(n, longest, dtype=torch.bool)
        spk = torch.zeros(n, self.speaker_dim, dtype=torch.float32)
        for i, s in enumerate(speakers):
            if s is not None:
                mask[i, 1] = True
                spk[i] = s
        dev = self.projection.device
        kw = {"positions": frame_positions(ids, self.cfg).to(dev), "embeds_mask": mask.to(dev),
              "embeds": self.project(spk)[:, None, :]}
        return ids, lens, kw

    def reset(self, slots: torch.Tensor) -> None:
        """Fresh frame state for newly admitted ``slots`` (device int64)."""
        self.frame_pos.index_fill_(0, slots, 0.0)
        self.audio_count.index_fill_(0, slots, 0)

    def decode_positions(self, tokens: torch.Tensor, cache_index: torch.Tensor) -> torch.Tensor:
        """Positions ``[b]`` float32 of the tokens ``[b]`` fed to slots ``0..b-1`` at
        ``cache_index [b]``, advancing those slots' frame state (the model's
        ``position_rule``). Slots not in use inside the step advance too: :meth:`reset`
        clears a slot when a request is admitted. No host syncs (CUDA-graph capturable)."""
        b = tokens.shape[0]
        count, fpos = self.audio_count[:b], self.frame_pos[:b]
        at = cache_index.to(torch.float32)
        audio = tokens >= self.cfg.audio_tokens_start
        first = audio & (count == 0)
        step = audio & (count > 0) & (count % self.cfg.tokens_per_frame == 0)
        new = torch.where(first, at, torch.where(step, fpos + self.cfg.audio_step, fpos))
        fpos.copy_(new)
        count.add_(audio.to(torch.int64))
        return torch.where(audio, new, at)


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return data


def detect(model: str | Path) -> Kani2Config | None:
    """The KaniTTS-2 settings of a hub id or folder (fetching only its ``config.json``), or
    None for a v1 model. Raises ModelLoadError."""
    cfg = read_config(resolve_dir(model, allow_patterns=["config.json"]))
    try:
        return Kani2Config.detect(cfg)
    except ValueError as exc:
        raise ModelLoadError(f"model {model}: {exc}") from exc


def require_v1(model: str | Path, backend: str) -> None:
    """For backends that serve KaniTTS v1 only: ModelLoadError if ``model`` is a KaniTTS-2
    checkpoint (its config says so), with what to use instead."""
    if detect(model) is not None:
        raise ModelLoadError(f"{model} is a KaniTTS-2 model; the {backend} backend serves KaniTTS v1 models "
                             f"only (KaniTTS-2 runs on the native backend)")


def split_weights(spec: Lfm2Spec, cfg: Kani2Config, tensors: dict[str, torch.Tensor]
                  ) -> tuple[Lfm2Spec, torch.Tensor]:
    """Take the KaniTTS-2 tensors out of ``tensors`` (in place): the spec with its per-layer
    RoPE scales, and the speaker projection ``[hidden, speaker_emb_dim]``. Raises ModelLoadError."""
    proj = tensors.pop(PROJECTION_KEY, None)
    if proj is None:
        raise ModelLoadError(f"KaniTTS-2 checkpoint lacks tensor {'model.' + PROJECTION_KEY!r}")
    if tuple(proj.shape) != (spec.hidden_size, cfg.speaker_emb_dim):
        raise ModelLoadError(f"{PROJECTION_KEY} has shape {tuple(proj.shape)}, expected "
                             f"({spec.hidden_size}, {cfg.speaker_emb_dim})")
    alphas = {k: tensors.pop(k) for k in [k for k in tensors if k.startswith("learnable_rope_layers.")]}
    scales = [1.0] * spec.num_layers
    if cfg.use_learnable_rope:
        for i in spec.attn_layers:
            w = alphas.pop(ALPHA_KEY.format(i), None)
            if w is None:
                raise ModelLoadError(f"use_learnable_rope is on but the checkpoint lacks "
                                     f"{'model.' + ALPHA_KEY.format(i)!r}")
            scales[i] = cfg.alpha(w)
        if alphas:
            logger.warning("native engine: RoPE weights for non-attention layers ignored: %s", sorted(alphas))
    elif alphas:
        logger.warning("native engine: use_learnable_rope is off; %d alpha weights ignored", len(alphas))
    out = replace(spec, rope_scales=tuple(scales) if cfg.use_learnable_rope else ())
    for s in out.rope_scales:
        if not math.isfinite(s):
            raise ModelLoadError("a learnable RoPE scale is not finite")
    return out, proj


def load_native_model(model: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                      ) -> tuple[Lfm2, Kani2Weights | None]:
    """Load a v1 (LFM2) or KaniTTS-2 checkpoint by hub id or folder: the model and, for
    KaniTTS-2, its extra weights (None for v1). Raises ModelLoadError."""
    from kanitts.engine.native.weights import load_lfm2, read_spec

    folder = resolve_dir(model)
    try:
        cfg = Kani2Config.detect(read_config(folder))
    except ValueError as exc:
        raise ModelLoadError(f"model {model}: {exc}") from exc
    if cfg is None:
        return load_lfm2(folder, device, dtype), None
    tensors = _read_tensors(folder)
    spec, proj = split_weights(read_spec(folder), cfg, tensors)
    lfm = build_model(spec, tensors, device, dtype)
    weights = Kani2Weights(cfg, proj.to(device=lfm.device, dtype=dtype))
    logger.info("native engine: loaded KaniTTS-2 %s (audio_step %s, learnable RoPE %s, speaker dim %d)",
                model, cfg.audio_step, "on" if cfg.use_learnable_rope else "off", cfg.speaker_emb_dim)
    return lfm, weights
