"""OLD (round 1) codebook-restricted logits processor, kept only to compare against the new one in one
device run (scripts/device_lp_bench.py, kanitts bench --compare-restrict): requests opt in with
``extra_args["kanitts_old"]``. Not used by the server.

Codebook-restricted decoding for vLLM (v1 custom logits processor).

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

Two ways to enforce it, chosen per request through ``SamplingParams.extra_args["kanitts"]``:

* ``mode="sample"`` (default, the fast path): the processor *samples* the token itself
  on the 4,032 (+2 special) candidates of the row — repetition penalty, temperature,
  top-p and a counter-based seeded RNG, all on a ``[rows, 4034]`` tensor — and hands vLLM
  a one-hot row. The request is sent to vLLM as greedy with no penalties, so vLLM's own
  sampler does an argmax only and never builds the ``[batch, 80539]`` penalty / top-p
  work that halves throughput at batch 256.
* ``mode="mask"``: the processor sets every invalid logit to -inf and vLLM samples as
  usual over the full vocabulary (same validity guarantee, no speed gain).

The pure pieces (:func:`allowed_token_ids`, :func:`candidate_layout`,
:func:`sample_candidates`) are plain Python / torch and tested on the CPU; the vLLM class
below only tracks the persistent batch and calls them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kanitts.protocol import (
    AUDIO_TOKEN_END,
    AUDIO_TOKEN_START,
    CODEBOOK_SIZE,
    END_OF_AI,
    END_OF_SPEECH,
    NUM_CODEBOOKS,
    START_OF_AI,
    START_OF_SPEECH,
    TEXT_VOCAB_SIZE,
)

#: FQCN that vLLM loads in its engine process (``logits_processors=[...]`` engine arg).
LOGITS_PROCESSOR_FQCN = "device_lp_old:KaniCodebookLogitsProcessor"
#: Key in ``SamplingParams.extra_args`` carrying the per-request settings.
EXTRA_ARGS_KEY = "kanitts_old"
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


_M32 = 0xFFFFFFFF


def _fmix32(h: torch.Tensor) -> torch.Tensor:
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _M32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def counter_uniform(seed: torch.Tensor, step: torch.Tensor, n: int) -> torch.Tensor:
    """Deterministic uniforms in (0, 1), ``[R, n]`` float32, from per-row (seed, step).

    A counter-based hash (murmur3 finalizer), so one vectorised op serves every row with its
    own seed; the same (seed, step) always gives the same numbers whatever the batch is.
    """
    s = _fmix32((seed.to(torch.int64) & _M32) ^ 0x5BD1E995)
    base = (s * 0x9E3779B1 + (step.to(torch.int64) & _M32) * 0x85EBCA77) & _M32
    j = torch.arange(n, device=seed.device, dtype=torch.int64)
    h = _fmix32((base[:, None] + j[None, :] * 0xC2B2AE3D) & _M32)
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


# --------------------------------------------------------------------- vLLM integration
try:  # the base class only exists where vLLM is installed; the class stays importable
    from vllm.v1.sample.logits_processor import LogitsProcessor as _LPBase  # type: ignore
except Exception:  # noqa: BLE001  (vLLM absent or incompatible)
    _LPBase = object  # type: ignore[assignment,misc]


def request_settings(params: Any) -> dict[str, Any] | None:
    """The kanitts settings in a vLLM SamplingParams' extra_args (None: not ours)."""
    extra = getattr(params, "extra_args", None) or {}
    cfg = extra.get(EXTRA_ARGS_KEY)
    if not cfg or cfg.get("mode", "sample") not in ("sample", "mask"):
        return None
    return cfg


class KaniCodebookLogitsProcessor(_LPBase):  # type: ignore[misc,valid-type]
    """Batch-level vLLM v1 logits processor enforcing (and, in ``sample`` mode, doing)
    codebook-restricted sampling. See the module docstring."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        max_reqs = int(vllm_config.scheduler_config.max_num_seqs) if vllm_config is not None else 256
        self.device = torch.device(device)
        self.max_reqs = max_reqs
        # per batch index: None or [mode, temperature, top_p, rep, seed, outputs, prompt_last, n_seen]
        self.rows: list[list[Any] | None] = [None] * max_reqs
        self.seen = torch.zeros((max_reqs, SEEN_WIDTH), dtype=torch.bool, device=self.device)

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        cfg = (getattr(sampling_params, "extra_args", None) or {}).get(EXTRA_ARGS_KEY)
        if cfg and cfg.get("mode", "sample") not in RESTRICT_MODES:
            raise ValueError(f"kanitts restrict mode must be one of {RESTRICT_MODES}")

    def is_argmax_invariant(self) -> bool:
        return False

    def needs_output_token_ids(self) -> bool:
        """The old processor reads real output ids (vLLM must sync on the previous step)."""
        return any(r is not None for r in self.rows)

    # -- persistent batch bookkeeping (order: removed, added, moved)
    def update_state(self, batch_update: Any) -> None:
        if not batch_update:
            return
        for index in batch_update.removed:
            self.rows[index] = None
        for index, params, prompt_ids, output_ids in batch_update.added:
            cfg = request_settings(params)
            if cfg is None:
                self.rows[index] = None
                continue
            seed = cfg.get("seed")
            if seed is None:
                seed = random.getrandbits(31)
            self.rows[index] = [
                cfg.get("mode", "sample"),
                float(cfg.get("temperature", 1.0)),
                float(cfg.get("top_p", 1.0)),
                float(cfg.get("repetition_penalty", 1.0)),
                int(seed),
                output_ids,
                int(prompt_ids[-1]) if prompt_ids else -1,
                0,
            ]
            self.seen[index].zero_()
        for a, b, direction in batch_update.moved:
            swap = getattr(direction, "name", direction) == "SWAP"
            ra, rb = self.rows[a], self.rows[b]
            self.rows[b] = ra
            if swap:
                self.rows[a] = rb
                self.seen[[a, b]] = self.seen[[b, a]]
            else:
                self.rows[a] = None
                self.seen[b] = self.seen[a]

    def _collect(self, batch_size: int):
        sample_rows, mask_rows = [], []
        last, seeds, steps, fparams = [], [], [], []
        new_r, new_c = [], []
        for i in range(min(batch_size, self.max_reqs)):
            st = self.rows[i]
            if st is None:
                continue
            out = st[5]
            n = len(out)
            k = st[7]
            while k < n and out[k] >= 0:
                t = out[k] - SEEN_LO
                if 0 <= t < SEEN_WIDTH:
                    new_r.append(i)
                    new_c.append(t)
                k += 1
            st[7] = k
            lt = out[k - 1] if k else st[6]
            if st[0] == "sample":
                sample_rows.append(i)
                seeds.append(st[4])
                steps.append(n)
                fparams.append((st[1], st[2], st[3]))
                last.append(lt)
            else:
                mask_rows.append((i, lt))
        return sample_rows, mask_rows, last, seeds, steps, fparams, new_r, new_c

    def _h2d(self, data: list, dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
        """Host -> device without stalling the CPU on the GPU stream (pinned, non-blocking):
        a pageable copy would wait for the forward pass queued before it."""
        pin = dev.type == "cuda"
        return torch.tensor(data, dtype=dtype, pin_memory=pin).to(dev, non_blocking=pin)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        (sample_rows, mask_rows, last, seeds, steps, fparams,
         new_r, new_c) = self._collect(logits.shape[0])
        dev = logits.device
        if new_r:
            rc = self._h2d([new_r, new_c], torch.int64, dev)
            self.seen[rc[0], rc[1]] = True
        if mask_rows:
            rl = self._h2d([[r for r, _ in mask_rows], [t for _, t in mask_rows]], torch.int64, dev)
            rows, lt = rl[0], rl[1]
            cand, ids = gather_candidates(logits, rows, lt)
            logits.index_fill_(0, rows, _NEG_INF)
            ok = ids >= 0
            logits[rows[:, None].expand_as(ids)[ok], ids[ok]] = cand[ok].to(logits.dtype)
        if sample_rows:
            ints = self._h2d([sample_rows, last, seeds, steps], torch.int64, dev)
            fp = self._h2d(fparams, torch.float32, dev)
            rows, lt = ints[0], ints[1]
            cand, ids = gather_candidates(logits, rows, lt)
            seen = self.seen[rows[:, None], (ids - SEEN_LO).clamp_(0, SEEN_WIDTH - 1)] & (ids >= 0)
            col = sample_candidates(cand, seen, fp[:, 0], fp[:, 1], fp[:, 2], ints[2], ints[3])
            chosen = ids.gather(1, col[:, None]).squeeze(1).clamp_(min=0)
            logits.index_fill_(0, rows, _NEG_INF)
            logits[rows, chosen] = 0.0
        return logits
