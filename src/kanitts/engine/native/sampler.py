"""On-GPU sampling for the native engine, with a codebook-only head.

Inside speech only the next codebook's 4,032 ids (plus END_OF_SPEECH at a frame boundary)
are valid, and before it only the opening ids; all of them lie in the head's rows
``[TEXT_VOCAB_SIZE, AUDIO_TOKEN_END)``. Constrained rows therefore only compute that slice
of the head (16,138 of 80,539 rows) and sample over 4,034 candidates laid out by the last
token (:func:`kanitts.engine.vllm_logits.layout_table`). Unconstrained rows use the full head.

Sampling is :func:`kanitts.engine.vllm_logits.sample_candidates` (the restricted sampler's
semantics: repetition penalty, temperature, top-p, greedy below 1e-5) with a counter-based
RNG keyed by (request seed, tokens sampled so far), so a request's tokens do not depend on
which other requests share the batch. The repetition penalty covers prompt + generated ids,
as Hugging Face and vLLM do. Stop ids are masked until a
request has ``min_tokens``.
"""

from __future__ import annotations

import torch

from kanitts.engine.native.model import Lfm2
from kanitts.engine.native.slots import SlotPool
from kanitts.engine.codebook_constraint import NUM_CANDIDATES, layout_table, sample_candidates
from kanitts.tokens import AUDIO_TOKEN_END, AUDIO_TOKEN_START, CODEBOOK_SIZE, TEXT_VOCAB_SIZE

#: Head rows a constrained row needs: specials + all four codebooks.
HEAD_LO, HEAD_HI = TEXT_VOCAB_SIZE, AUDIO_TOKEN_END


class Sampler:
    """Samples the next token of slots ``rows`` (a slice of the pool or an index tensor)
    from their final hidden states and advances their sampling state in place."""

    def __init__(self, model: Lfm2, pool: SlotPool) -> None:
        self.model, self.pool = model, pool
        dev = model.device
        if model.spec.vocab_size < HEAD_HI:
            raise ValueError(f"vocab {model.spec.vocab_size} is smaller than the KaniTTS layout ({HEAD_HI})")
        self.table = layout_table(dev)
        self.ar = torch.arange(CODEBOOK_SIZE, device=dev)
        self.true = torch.ones((), dtype=torch.bool, device=dev)

    def _stop_masked(self, cand: torch.Tensor, ids: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
        p = self.pool
        hold = (p.gen[rows] < p.min_tokens[rows])[:, None]  # [R, 1]
        stop = p.stop_ids[rows]  # [R, K]
        is_stop = (ids[:, :, None] == stop[:, None, :]).any(-1)  # [R, C]
        return cand.masked_fill(hold & is_stop, float("-inf"))

    def _sample(self, cand: torch.Tensor, ids: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
        p = self.pool
        seen = p.seen[rows].gather(1, ids.clamp(min=0))
        col = sample_candidates(cand, seen, p.temperature[rows], p.top_p[rows], p.rep_penalty[rows],
                                p.seed[rows], p.gen[rows])
        return ids.gather(1, col[:, None]).squeeze(1)

    def restricted(self, hidden: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
        """Constrained sampling over the valid candidates: ``[R]`` int64 token ids."""
        last = self.pool.tok[rows]
        logits = self.model.logits(hidden, HEAD_LO, HEAD_HI).float()  # [R, 16138]
        lay = self.table[last + 1]  # [R, 3]
        lo, e1, e2 = lay[:, 0], lay[:, 1], lay[:, 2]
        has_block = lo >= 0
        block = torch.where(has_block, lo, torch.full_like(lo, AUDIO_TOKEN_START))[:, None] + self.ar
        ids = torch.cat([block, e1[:, None], e2[:, None]], dim=1)  # [R, 4034]
        valid = torch.cat([has_block[:, None].expand(-1, CODEBOOK_SIZE), (e1 >= 0)[:, None], (e2 >= 0)[:, None]], 1)
        ids = torch.where(valid, ids, torch.full_like(ids, -1))
        cols = torch.where(valid, ids - HEAD_LO, torch.zeros_like(ids))
        cand = logits.gather(1, cols).masked_fill(~valid, float("-inf"))
        cand = self._stop_masked(cand, ids, rows)
        assert cand.shape[1] == NUM_CANDIDATES
        return self._sample(cand, ids, rows)

    def full(self, hidden: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
        """Unconstrained sampling over the whole vocabulary: ``[R]`` int64 token ids."""
        logits = self.model.logits(hidden).float()  # [R, V]
        ids = torch.arange(logits.shape[1], device=logits.device).expand(logits.shape[0], -1)
        cand = self._stop_masked(logits, ids, rows)
        return self._sample(cand, ids, rows)

    def sample(self, hidden: torch.Tensor, rows: slice | torch.Tensor, any_unconstrained: bool) -> torch.Tensor:
        """Next tokens ``[R]`` int64 (-1 where an active row had no valid candidate); writes
        them into ``pool.tok``, marks them seen and counts them, for active rows only (an
        inactive row returns and keeps its current token). ``any_unconstrained`` (a host
        flag) adds the full-head path for rows that need it."""
        p = self.pool
        tok = self.restricted(hidden, rows)
        if any_unconstrained:
            tok = torch.where(p.constrained[rows], tok, self.full(hidden, rows))
        # Written on the pool tensors themselves (index ops, never through a slice view, which
        # torch.compile on torch < 2.12 turns into a copy of the whole tensor, e.g. ``seen``);
        # index_put_ with a device value: a Python scalar would be a host copy (not capturable).
        idx = p.slot_ids[rows] if isinstance(rows, slice) else rows
        # Padding rows (inactive slots inside a decode bucket) keep their token and count:
        # sampled from a stale state they would otherwise walk on step after step. An active
        # row's pick is written as is, so an invalid one (-1: no valid candidate) reaches the
        # host, which fails that request alone; the next step embeds it clamped
        # (:meth:`DecodeStep.step_eager`).
        act = p.active[rows]
        tok = torch.where(act, tok, p.tok[rows])
        p.tok.index_copy_(0, idx, tok)
        p.gen.index_copy_(0, idx, p.gen[rows] + act.to(torch.int64))
        p.seen.index_put_((idx, tok.clamp(min=0)), self.true)
        return tok

