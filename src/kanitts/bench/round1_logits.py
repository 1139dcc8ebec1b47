"""The round-1 codebook-restricted logits processor, kept only to compare against the current one
in one device run (scripts/logits_processor_bench.py, ``kanitts bench --compare-restrict``'s
``sample_old`` path): requests opt in with ``extra_args["kanitts_old"]``. Not used by the server.

Only the processor class is the round-1 code (Python row loop, host<->device copies, a sync for
the generated ids every step); the pure pieces it calls (the validity state machine, candidate
layout, counter RNG, candidate sampling) are the current ones from
:mod:`kanitts.engine.vllm_logits`, which the round-1 code had verbatim.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from kanitts.engine import vllm_logits as _current
from kanitts.engine.vllm_logits import (
    _NEG_INF,
    RESTRICT_MODES,
    SEEN_LO,
    SEEN_WIDTH,
    _LPBase,
    gather_candidates,
    sample_candidates,
)

#: FQCN that vLLM loads in its engine process (``logits_processors=[...]`` engine arg).
LOGITS_PROCESSOR_FQCN = "kanitts.bench.round1_logits:KaniCodebookLogitsProcessor"
#: Key in ``SamplingParams.extra_args`` carrying the per-request settings.
EXTRA_ARGS_KEY = "kanitts_old"


def request_settings(params: Any) -> dict[str, Any] | None:
    """The settings under this module's key (None: not a round-1 request)."""
    return _current.request_settings(params, EXTRA_ARGS_KEY)


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
