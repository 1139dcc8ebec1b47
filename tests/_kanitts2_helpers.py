"""Shared by the KaniTTS-2 parity tests and ``scripts/make_kanitts2_fixture.py``.

The reference is ``kani_tts/model.py`` of ``kani-tts-2==0.0.5`` (installed with --no-deps),
loaded from its file (the package ``__init__`` imports NeMo). It needs transformers 4.5x
(``Lfm2HybridConvCache``, ``Lfm2Model.pos_emb``; the package's README pins 4.56.0): under
transformers 5 :func:`reference_model_module` returns None and the live checks skip.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from kanitts import tokens as t

#: Reference package pinned for parity (installed with --no-deps; see README).
REFERENCE_PACKAGE = "kani-tts-2==0.0.5"

#: (audio_step, use_learnable_rope, weight seed) of the checked checkpoints.
VARIANTS: tuple[tuple[float, bool, int], ...] = ((1.0, False, 11), (1.0, True, 12), (0.5, False, 13), (0.5, True, 14))
#: The reference's own prompt layout (core.py), text ids of the tiny tokenizer's range.
PROMPT = [t.START_OF_HUMAN, t.START_OF_TEXT, 40, 41, 42, 43, 44, t.END_OF_TEXT, t.END_OF_HUMAN]
#: Teacher-forced rows: the prompt, the model's opening, then ``FRAMES`` audio frames.
FRAMES = 3
#: Greedy runs: (constrained to the speech layout, repetition penalty, new tokens).
GREEDY_RUNS: tuple[tuple[bool, float, int], ...] = ((True, 1.1, 30), (False, 1.0, 12))
#: Logit columns stored in the fixture (specials, each codebook, some text ids).
COLUMNS_SEED = 99
N_COLUMNS = 24


def reference_model_module() -> ModuleType | None:
    """``kani_tts/model.py`` of the installed reference, or None when it is absent or
    cannot import (transformers 5 lacks ``Lfm2HybridConvCache``)."""
    spec = importlib.util.find_spec("kani_tts")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = f"{list(spec.submodule_search_locations)[0]}/model.py"
    module_spec = importlib.util.spec_from_file_location("kani_tts_reference_model", path)
    if module_spec is None or module_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except ImportError:
        return None
    return module


def speaker_embedding(seed: int) -> torch.Tensor:
    """``[128]`` float32, unit norm (as the speaker encoder's output)."""
    e = torch.randn(128, generator=torch.Generator().manual_seed(seed))
    return e / e.norm()


def teacher_forced_ids(seed: int = 7) -> list[int]:
    """The prompt, the opening, then ``FRAMES`` random audio frames."""
    g = torch.Generator().manual_seed(seed)
    frames = [t.audio_token(k, int(torch.randint(0, t.CODEBOOK_SIZE, (1,), generator=g)))
              for _ in range(FRAMES) for k in range(t.NUM_CODEBOOKS)]
    return [*PROMPT, *t.OPENING, *frames]


def logit_columns() -> torch.Tensor:
    """Sorted column ids: the specials, 4 ids per codebook, random text ids."""
    g = torch.Generator().manual_seed(COLUMNS_SEED)
    cols = set(range(t.START_OF_SPEECH, t.END_OF_AI + 1))
    for k in range(t.NUM_CODEBOOKS):
        lo, hi = t.allowed_range(k)
        cols.update(int(c) for c in torch.randint(lo, hi, (4,), generator=g))
    while len(cols) < N_COLUMNS:
        cols.add(int(torch.randint(3, t.TEXT_VOCAB_SIZE, (1,), generator=g)))
    return torch.tensor(sorted(cols)[:N_COLUMNS])


def build_reference(ref: ModuleType, folder: str | Path) -> Any:
    """The reference ``KaniTTS2ForCausalLM`` on ``folder``'s config and weights (float32):
    every checkpoint key loads, only the tied ``lm_head.weight`` is not stored."""
    from safetensors.torch import load_file
    from transformers import GenerationConfig, Lfm2Config

    cfg = Lfm2Config.from_pretrained(folder)
    model = ref.KaniTTS2ForCausalLM(cfg, cfg.audio_tokens_start, cfg.tokens_per_frame, cfg.audio_step,
                                    cfg.use_learnable_rope, cfg.alpha_min, cfg.alpha_max, cfg.speaker_emb_dim)
    state = {k: v.float() for k, v in load_file(str(Path(folder) / "model.safetensors")).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert list(missing) == ["lm_head.weight"] and not unexpected, (missing, unexpected)
    model.generation_config = GenerationConfig()  # what its from_pretrained sets when none is stored
    return model.eval()


@torch.no_grad()
def reference_teacher_forced(ref: ModuleType, model: Any, ids: list[int], speaker: torch.Tensor) -> torch.Tensor:
    """Logits ``[len(ids) + 1, V]``: the speaker row after the first token, positions from
    the reference's ``compute_frame_level_positions`` (the speaker row counts as text)."""
    emb = model.model.embed_tokens(torch.tensor([ids]))
    row = model.model.speaker_emb_projection(speaker[None])[:, None]
    embeds = torch.cat([emb[:, :1], row, emb[:, 1:]], 1)
    spliced = torch.tensor([[ids[0], t.PAD, *ids[1:]]])
    pos = ref.compute_frame_level_positions(spliced, model.audio_tokens_start, model.tokens_per_frame,
                                            model.audio_step)
    # an explicit mask: without one transformers reads repeated positions as packed sequences
    mask = torch.ones(1, embeds.shape[1], dtype=torch.long)
    return model(inputs_embeds=embeds, position_ids=pos, attention_mask=mask, use_cache=False).logits[0]


def constraint_processor(prompt: list[int]) -> Any:
    """A transformers logits processor allowing what the native engine's constrained
    sampler allows (the KaniTTS speech layout)."""
    from transformers import LogitsProcessor

    from kanitts.engine.vllm_logits import allowed_token_ids

    class Constrain(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            seq = input_ids[0].tolist()
            allowed = allowed_token_ids(seq[: len(prompt)], seq[len(prompt):])
            keep = torch.full_like(scores, float("-inf"))
            keep[:, torch.tensor(allowed.ids())] = 0.0
            return scores + keep

    return Constrain()


@torch.no_grad()
def reference_greedy(model: Any, prompt: list[int], speaker: torch.Tensor, n: int, rep: float,
                     constrained: bool) -> list[int]:
    """Greedy tokens from the reference's own decoding step: its
    ``prepare_inputs_for_generation`` (speaker insertion, frame-position state) and forward,
    one token at a time on its cache, with a complete attention mask.

    (Its ``generate(speaker_emb=...)`` passes a mask one entry short of the cache once the
    speaker row is in it; transformers pads the missing entry as padding, so each decoded
    token is hidden from itself and the tokens drift from what the model's forward gives.)"""
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    procs = [RepetitionPenaltyLogitsProcessor(rep)] if rep != 1.0 else []
    if constrained:
        procs.append(constraint_processor(prompt))
    model._current_speaker_emb, model._generation_state = speaker[None], None
    ids, cache = torch.tensor([prompt]), None
    try:
        for _ in range(n):
            seen = ids.shape[1] if cache is None else cache.get_seq_length() + 1
            inputs = model.prepare_inputs_for_generation(ids, past_key_values=cache, use_cache=True,
                                                         attention_mask=torch.ones(1, seen, dtype=torch.long))
            out = model(**inputs)
            cache = out.past_key_values
            scores = out.logits[:, -1].float()
            for proc in procs:
                scores = proc(ids, scores)
            ids = torch.cat([ids, scores.argmax(-1, keepdim=True)], 1)
    finally:
        model._current_speaker_emb, model._generation_state = None, None
    return ids[0, len(prompt):].tolist()
