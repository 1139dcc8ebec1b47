"""The retired PyTorch backend's sampler, kept as a plain-Python reference for the native engine's.

:class:`SpeechConstraint` walks the token layout one id at a time (which ids may come next);
:func:`sample_next` samples one id from a whole-vocabulary logits row under it. The native
engine's codebook-only sampler (:mod:`kanitts.engine.native.sampler`) must pick what these pick
(tests/test_native_units.py); tests/test_tokens.py checks the walk itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kanitts.engine.base import SamplingParams
from kanitts.tokens import (
    AUDIO_TOKEN_END,
    AUDIO_TOKEN_START,
    END_OF_AI,
    END_OF_SPEECH,
    NUM_CODEBOOKS,
    START_OF_AI,
    START_OF_SPEECH,
    STOP_TOKEN_IDS,
    allowed_range,
)


class SpeechConstraint:
    """Which ids may come next, so that every generated frame is valid.

    Before speech: START_OF_AI or START_OF_SPEECH (the model's opening); after START_OF_AI:
    START_OF_SPEECH; inside speech: the next codebook's 4032 ids, plus END_OF_SPEECH at a
    frame boundary (unless ``allow_stop`` is False, e.g. while ``min_tokens`` is unmet).
    :meth:`for_prompt` starts in the state the prompt's last token implies (inside speech for
    prompts that end with the opening, so the stream starts directly with audio).
    Incremental (O(1) per token).
    """

    __slots__ = ("state", "position")

    PRE, AFTER_AI, SPEECH, DONE = range(4)

    def __init__(self) -> None:
        self.state = self.PRE
        self.position = 0  # codebook expected next inside speech

    @classmethod
    def for_prompt(cls, prompt_ids: Sequence[int]) -> SpeechConstraint:
        """A constraint in the state after ``prompt_ids`` (e.g. inside speech when the
        prompt ends with START_OF_SPEECH: the model's opening teacher-forced)."""
        c = cls()
        if prompt_ids:
            if prompt_ids[-1] == START_OF_SPEECH:
                c.state = cls.SPEECH
            elif prompt_ids[-1] == START_OF_AI:
                c.state = cls.AFTER_AI
        return c

    def advance(self, token_id: int) -> None:
        if self.state == self.PRE:
            if token_id == START_OF_AI:
                self.state = self.AFTER_AI
            elif token_id == START_OF_SPEECH:
                self.state = self.SPEECH
        elif self.state == self.AFTER_AI:
            if token_id == START_OF_SPEECH:
                self.state = self.SPEECH
        elif self.state == self.SPEECH:
            if token_id in STOP_TOKEN_IDS:
                self.state = self.DONE
            elif AUDIO_TOKEN_START <= token_id < AUDIO_TOKEN_END:
                self.position = (self.position + 1) % NUM_CODEBOOKS

    def allowed(self, allow_stop: bool = True) -> tuple[list[int], tuple[int, int] | None]:
        """``(single ids, half-open id range or None)`` allowed next."""
        if self.state == self.PRE:
            return [START_OF_AI, START_OF_SPEECH], None
        if self.state == self.AFTER_AI:
            return [START_OF_SPEECH], None
        if self.state == self.SPEECH:
            singles = [END_OF_SPEECH] if (self.position == 0 and allow_stop) else []
            return singles, allowed_range(self.position)
        return [END_OF_AI], None


def sample_next(
    logits: torch.Tensor,
    params: SamplingParams,
    history: torch.Tensor,
    constraint: SpeechConstraint | None,
    allow_stop: bool,
    generator: torch.Generator | None,
) -> int:
    """One sampling step on a [vocab] logits row (float32).

    Order: validity mask, repetition penalty (over prompt + output, as HF and vLLM do),
    temperature, nucleus. With a constraint only the valid slice is materialised.
    """
    vocab = logits.shape[-1]
    if constraint is not None:
        singles, rng = constraint.allowed(allow_stop)
        parts = [torch.tensor(singles, dtype=torch.long, device=logits.device)]
        if rng is not None:
            parts.append(torch.arange(rng[0], min(rng[1], vocab), device=logits.device))
        cand = torch.cat(parts)
        cand = cand[cand < vocab]
    else:
        cand = torch.arange(vocab, device=logits.device)
        if not allow_stop:
            logits = logits.clone()
            logits[[t for t in params.stop_token_ids if t < vocab]] = float("-inf")
    sub = logits[cand].float()
    if params.repetition_penalty != 1.0 and history.numel():
        seen = torch.isin(cand, history)
        penalised = torch.where(sub > 0, sub / params.repetition_penalty, sub * params.repetition_penalty)
        sub = torch.where(seen, penalised, sub)
    if params.temperature < 1e-5:  # vLLM's threshold: tiny temperatures are greedy
        return int(cand[int(torch.argmax(sub))])
    sub = (sub - sub.max()) / params.temperature
    probs = torch.softmax(sub, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_p, dim=-1)
        keep = cum - sorted_p < params.top_p
        keep[0] = True
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        pick = torch.multinomial(sorted_p, 1, generator=generator)
        return int(cand[order[pick]])
    pick = torch.multinomial(probs, 1, generator=generator)
    return int(cand[pick])
