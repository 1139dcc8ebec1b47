"""Codebook-restricted decoding, the pure part: which ids may come next and how to sample
among them (plain Python / torch, no vLLM; tested on the CPU).

Inside speech only the next codebook's 4,032 ids (or END_OF_SPEECH at a frame boundary)
are valid. Which ids are valid depends only on the *last* token of the sequence
(prompt + generated so far), so the constraint is a tiny state machine:

====================================  ==========================================
last token                            valid next tokens
====================================  ==========================================
anything else (e.g. END_OF_HUMAN)     START_OF_AI, START_OF_SPEECH
START_OF_AI                           START_OF_SPEECH
START_OF_SPEECH                       codebook 0
codebook k (k = 0, 1, 2)              codebook k + 1
codebook 3                            codebook 0, END_OF_SPEECH
END_OF_SPEECH / END_OF_AI             END_OF_AI
====================================  ==========================================

END_OF_AI is never valid before speech: an empty utterance is not a useful outcome, and
the reference implementation only ever stops on END_OF_SPEECH / END_OF_AI after audio.

:mod:`kanitts.engine.vllm_logits` runs these inside vLLM (a v1 logits processor);
:mod:`kanitts.engine.vllm_patch` is the one change it makes to vLLM itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kanitts.tokens import (
    AUDIO_TOKEN_END,
    AUDIO_TOKEN_START,
    CODEBOOK_SIZE,
    END_OF_AI,
    END_OF_SPEECH,
    MODEL_VOCAB_SIZE,
    NUM_CODEBOOKS,
    START_OF_AI,
    START_OF_SPEECH,
    TEXT_VOCAB_SIZE,
)

#: Key in ``SamplingParams.extra_args`` carrying the per-request settings.
EXTRA_ARGS_KEY = "kanitts"
RESTRICT_MODES = ("sample", "mask", "off")

#: Candidate columns: the 4,032 ids of one codebook, then two special ids.
NUM_EXTRA = 2
NUM_CANDIDATES = CODEBOOK_SIZE + NUM_EXTRA
#: Region of the vocabulary whose "already generated" bits are tracked for the
#: repetition penalty (special tokens + all audio ids).
SEEN_LO = TEXT_VOCAB_SIZE
SEEN_WIDTH = AUDIO_TOKEN_END - SEEN_LO
_NEG_INF = float("-inf")
_SAMPLING_EPS = 1e-5


@dataclass(frozen=True)
class Allowed:
    """Valid next tokens: ``[lo, hi)`` (empty when lo == hi) plus a few single ids."""

    lo: int
    hi: int
    extra: tuple[int, ...]

    def ids(self) -> list[int]:
        return [*range(self.lo, self.hi), *self.extra]

    def __contains__(self, token: int) -> bool:
        return self.lo <= token < self.hi or token in self.extra


def allowed_after(last_token: int | None) -> Allowed:
    """Valid next tokens given the last token of prompt + generated ids."""
    if last_token is not None and AUDIO_TOKEN_START <= last_token < AUDIO_TOKEN_END:
        k = ((last_token - AUDIO_TOKEN_START) // CODEBOOK_SIZE + 1) % NUM_CODEBOOKS
        lo = AUDIO_TOKEN_START + k * CODEBOOK_SIZE
        return Allowed(lo, lo + CODEBOOK_SIZE, (END_OF_SPEECH,) if k == 0 else ())
    if last_token == START_OF_SPEECH:
        return Allowed(AUDIO_TOKEN_START, AUDIO_TOKEN_START + CODEBOOK_SIZE, ())
    if last_token == START_OF_AI:
        return Allowed(0, 0, (START_OF_SPEECH,))
    if last_token in (END_OF_SPEECH, END_OF_AI):
        return Allowed(0, 0, (END_OF_AI,))
    return Allowed(0, 0, (START_OF_AI, START_OF_SPEECH))


def allowed_token_ids(prompt_ids: Sequence[int], generated_ids: Sequence[int]) -> Allowed:
    """Valid next tokens for a sequence (the CPU-testable seam)."""
    if generated_ids:
        return allowed_after(generated_ids[-1])
    return allowed_after(prompt_ids[-1] if prompt_ids else None)


def candidate_layout(last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vectorised :func:`allowed_after` over a ``[R]`` int64 tensor of last tokens.

    Returns ``(block_lo, extra1, extra2)``, each ``[R]`` int64: the first id of the valid
    codebook block (-1 when no block is valid) and up to two extra valid ids (-1 = none).
    """
    audio = (last >= AUDIO_TOKEN_START) & (last < AUDIO_TOKEN_END)
    k_next = torch.remainder(torch.div(last - AUDIO_TOKEN_START, CODEBOOK_SIZE, rounding_mode="floor") + 1,
                             NUM_CODEBOOKS)
    neg = torch.full_like(last, -1)
    block_lo = torch.where(audio, AUDIO_TOKEN_START + k_next * CODEBOOK_SIZE, neg)
    block_lo = torch.where(last == START_OF_SPEECH, torch.full_like(last, AUDIO_TOKEN_START), block_lo)
    is_sos = last == START_OF_SPEECH
    is_soa = last == START_OF_AI
    is_end = (last == END_OF_SPEECH) | (last == END_OF_AI)
    start = ~(audio | is_sos | is_soa | is_end)
    extra1 = torch.where(audio & (k_next == 0), torch.full_like(last, END_OF_SPEECH), neg)
    extra1 = torch.where(is_soa, torch.full_like(last, START_OF_SPEECH), extra1)
    extra1 = torch.where(is_end, torch.full_like(last, END_OF_AI), extra1)
    extra1 = torch.where(start, torch.full_like(last, START_OF_AI), extra1)
    extra2 = torch.where(start, torch.full_like(last, START_OF_SPEECH), neg)
    return block_lo, extra1, extra2


def gather_candidates(logits: torch.Tensor, rows: torch.Tensor, last: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate logits ``[R, 4034]`` (invalid = -inf) and their token ids ``[R, 4034]``."""
    block_lo, e1, e2 = candidate_layout(last)
    ar = torch.arange(CODEBOOK_SIZE, device=logits.device)
    has_block = block_lo >= 0
    ids_block = torch.where(has_block, block_lo, torch.full_like(block_lo, AUDIO_TOKEN_START))[:, None] + ar
    ids = torch.cat([ids_block, e1[:, None], e2[:, None]], dim=1)
    valid = torch.cat([has_block[:, None].expand(-1, CODEBOOK_SIZE), (e1 >= 0)[:, None], (e2 >= 0)[:, None]], 1)
    ids = torch.where(valid, ids, torch.zeros_like(ids))
    cand = logits[rows[:, None], ids].float()
    cand = cand.masked_fill(~valid, _NEG_INF)
    return cand, torch.where(valid, ids, torch.full_like(ids, -1))


# The hash is 32-bit arithmetic carried in int64 without overflow and with no constant in
# [2**31, 2**32): each multiplier is written as its negative equivalent mod 2**32 and the
# mask as a subtraction, so every backend (eager, Inductor's C++ and Triton code, whose
# literals in that range would be typed uint32) computes the same bits.
_TWO32 = 1 << 32


def _i32(c: int) -> int:
    """A 32-bit constant as the int in [-2**31, 2**31) equal to it mod 2**32."""
    return c - _TWO32 if c >= 1 << 31 else c


def _lo32(x: torch.Tensor) -> torch.Tensor:
    """``x mod 2**32`` (= ``x & 0xFFFFFFFF``) of an int64 tensor."""
    return x - (x >> 32) * _TWO32


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for ``0 <= x < 2**32`` (no int64 overflow)."""
    return _lo32(x * _i32(c))


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def counter_uniform(seed: torch.Tensor, step: torch.Tensor, n: int) -> torch.Tensor:
    """Deterministic uniforms in (0, 1), ``[R, n]`` float32, from per-row (seed, step).

    A counter-based hash (murmur3 finalizer), so one vectorised op serves every row with its
    own seed; the same (seed, step) always gives the same numbers whatever the batch is.
    """
    s = _fmix32(_lo32(seed.to(torch.int64)) ^ 0x5BD1E995)
    base = _lo32(_mul32(s, 0x9E3779B1) + _mul32(_lo32(step.to(torch.int64)), 0x85EBCA77))
    j = torch.arange(n, device=seed.device, dtype=torch.int64)
    h = _fmix32(_lo32(base[:, None] + _mul32(j, 0xC2B2AE3D)[None, :]))
    h = _fmix32(h ^ s[:, None])
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def sample_candidates(
    cand: torch.Tensor,
    seen: torch.Tensor | None,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    repetition_penalty: torch.Tensor,
    seed: torch.Tensor,
    step: torch.Tensor,
) -> torch.Tensor:
    """Sample one candidate column per row; returns ``[R]`` int64 column indices.

    ``cand``: ``[R, C]`` float32 logits, -inf = invalid. ``seen``: ``[R, C]`` bool, True
    where the candidate token was generated before (repetition penalty, vLLM semantics:
    positive logits divided, negative multiplied). Temperature < 1e-5 = greedy.
    """
    x = cand
    if seen is not None:
        pen = repetition_penalty[:, None]
        x = torch.where(seen, torch.where(x > 0, x / pen, x * pen), x)
    # a row with no valid candidate (cannot happen with consistent stop ids) picks column 0
    dead = torch.isneginf(x).all(dim=1, keepdim=True)
    first = torch.zeros_like(x, dtype=torch.bool)
    first[:, 0] = True
    x = torch.where(dead & first, torch.zeros_like(x), x)  # no host sync
    greedy = x.argmax(dim=1)
    temp = torch.where(temperature < _SAMPLING_EPS, torch.ones_like(temperature), temperature)
    probs = torch.softmax(x / temp[:, None], dim=1)
    sp, si = probs.sort(dim=1, descending=True)
    cum = sp.cumsum(dim=1)
    keep = (cum - sp) < top_p[:, None]
    keep[:, 0] = True
    sp = sp.masked_fill(~keep, 0.0)
    expo = -torch.log(counter_uniform(seed, step, sp.shape[1]))
    pick = (sp / expo).argmax(dim=1)
    sampled = si.gather(1, pick[:, None]).squeeze(1)
    return torch.where(temperature < _SAMPLING_EPS, greedy, sampled)


def request_settings(params: Any, key: str = EXTRA_ARGS_KEY) -> dict[str, Any] | None:
    """The kanitts settings in a vLLM SamplingParams' extra_args under ``key`` (None: not ours)."""
    extra = getattr(params, "extra_args", None) or {}
    cfg = extra.get(key)
    if not cfg or cfg.get("mode", "sample") not in ("sample", "mask"):
        return None
    return cfg


_BIG = 1e30  # finite (no NaN under vLLM's temperature/softmax in mixed batches), beats any logit
_NO_BLOCK = -(1 << 20)  # block start of "no codebook valid": block ids stay negative (= invalid)
_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def layout_table(device: torch.device | str = "cpu") -> torch.Tensor:
    """``[T, 3]`` int64: row ``last + 1`` = (first id of the valid codebook or a large negative
    number, extra id 1, extra id 2) -- :func:`candidate_layout` for every possible last token
    (row 0: no last token). One gather per step replaces ~20 elementwise ops."""
    top = max(AUDIO_TOKEN_END, MODEL_VOCAB_SIZE) + 1
    last = torch.arange(-1, top, dtype=torch.int64)
    lo, e1, e2 = candidate_layout(last)
    lo = torch.where(last < 0, torch.full_like(lo, -1), lo)
    lo = torch.where(lo < 0, torch.full_like(lo, _NO_BLOCK), lo)
    return torch.stack([lo, e1, e2], dim=1).to(device)
