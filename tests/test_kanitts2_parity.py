"""KaniTTS-2 on the native engine vs the official ``KaniTTS2ForCausalLM`` (CPU, float32).

The fixture (``tests/fixtures/kanitts2/reference_parity.npz``, made by
``scripts/make_kanitts2_fixture.py`` with the live reference) holds, for audio_step 1.0 / 0.5
and learnable RoPE off / on, the reference's teacher-forced logits at a few columns (prompt +
speaker row + opening + 3 frames), their full-vocabulary argmax and row sums, and its greedy
tokens with a speaker embedding. Weights and inputs are regenerated from seeds (the weight
digest proves it), so CI needs no reference. When the reference imports (kani-tts-2 0.0.5
with transformers 4.5x) the live tests compare full logits and greedy tokens directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _kanitts2_helpers import (
    GREEDY_RUNS,
    PROMPT,
    VARIANTS,
    build_reference,
    logit_columns,
    reference_greedy,
    reference_model_module,
    reference_teacher_forced,
    speaker_embedding,
    teacher_forced_ids,
)

from kanitts import tokens as t
from kanitts.engine.base import SamplingParams
from kanitts.engine.native.backend import NativeBackend
from kanitts.engine.native.kanitts2 import load_native_model
from kanitts.engine.native.model import StateCache
from kanitts.tiny_kanitts2 import build_state, kanitts2_config, state_digest, write_kanitts2_model

FIXTURE = Path(__file__).parent / "fixtures" / "kanitts2" / "reference_parity.npz"
TOL = 1e-4


@pytest.fixture(scope="module")
def fixture() -> dict:
    data = np.load(FIXTURE)
    out = {k: data[k] for k in data.files if k != "meta_json"}
    out["meta"] = json.loads(bytes(data["meta_json"]).decode())
    return out


@pytest.fixture(scope="module")
def variant_dirs(tmp_path_factory) -> list[Path]:
    return [write_kanitts2_model(tmp_path_factory.mktemp(f"k2-{i}"), seed=seed, audio_step=step, learnable_rope=rope)
            for i, (step, rope, seed) in enumerate(VARIANTS)]


@torch.no_grad()
def native_teacher_forced(folder: Path, ids: list[int], speaker: torch.Tensor) -> torch.Tensor:
    """Our logits ``[len(ids) + 1, V]`` through the engine's own prefill inputs."""
    model, k2 = load_native_model(folder, "cpu", torch.float32)
    assert k2 is not None
    rows, lens, kw = k2.runtime(1).prefill_inputs([ids], [speaker])
    cache = StateCache(model.spec, 1, 64, model.device, model.dtype)
    return model.logits(model.prefill(cache, torch.tensor([0]), rows, lens, **kw))[0]


async def native_greedy(folder: Path, speaker: torch.Tensor, n: int, rep: float, constrained: bool) -> list[int]:
    b = NativeBackend(str(folder), device="cpu", dtype="float32", max_num_seqs=4, max_model_len=128,
                      force_opening=False)
    await b.start()
    out: list[int] = []
    try:
        params = SamplingParams(temperature=0.0, repetition_penalty=rep, max_tokens=n, constrained=constrained,
                                stop_token_ids=(t.END_OF_TEXT,), speaker_embedding=tuple(speaker.tolist()))
        async for ids in b.stream(PROMPT, params):
            out += ids
    finally:
        await b.close()
    return out


def test_fixture_weights_are_the_ones_kanitts_writes(fixture):
    meta = fixture["meta"]
    assert meta["variants"] == [list(v) for v in VARIANTS]
    for (step, rope, seed), digest in zip(VARIANTS, meta["weights_digests"]):
        assert state_digest(build_state(kanitts2_config(audio_step=step, learnable_rope=rope), seed)) == digest
    assert torch.equal(torch.from_numpy(fixture["columns"]), logit_columns())


@pytest.mark.parametrize("i", range(len(VARIANTS)))
def test_teacher_forced_logits_match_the_reference_fixture(fixture, variant_dirs, i):
    meta = fixture["meta"]
    ids = teacher_forced_ids(meta["ids_seed"])
    logits = native_teacher_forced(variant_dirs[i], ids, speaker_embedding(meta["speaker_seed"] + i))
    assert logits.shape[0] == len(ids) + 1
    cols = torch.from_numpy(fixture["columns"])
    diff = (logits[:, cols] - torch.from_numpy(fixture[f"tf_cols_{i}"])).abs().max().item()
    assert diff <= TOL, f"max |logit diff| {diff:.3g}"
    assert logits.argmax(-1).tolist() == fixture[f"tf_argmax_{i}"].tolist()
    sums = logits.double().sum(-1)
    assert (sums - torch.from_numpy(fixture[f"tf_rowsum_{i}"])).abs().max().item() <= 1e-2


@pytest.mark.parametrize("i", range(len(VARIANTS)))
async def test_greedy_generation_with_a_speaker_matches_the_reference_fixture(fixture, variant_dirs, i):
    speaker = speaker_embedding(fixture["meta"]["speaker_seed"] + i)
    for j, (constrained, rep, n) in enumerate(GREEDY_RUNS):
        ours = await native_greedy(variant_dirs[i], speaker, n, rep, constrained)
        assert ours == fixture[f"greedy_{i}_{j}"].tolist(), (VARIANTS[i], GREEDY_RUNS[j])
        if constrained:
            t.FrameParser().feed(ours)  # every frame valid


def test_the_fixture_can_tell_the_variants_apart(fixture, variant_dirs):
    """What the checks rest on matters: dropping the speaker row, the learnable RoPE scales
    or the fractional step moves the logits far beyond the tolerance."""
    from dataclasses import replace

    meta = fixture["meta"]
    ids = teacher_forced_ids(meta["ids_seed"])
    cols = torch.from_numpy(fixture["columns"])
    i = 3  # audio_step 0.5, learnable RoPE on
    want = torch.from_numpy(fixture[f"tf_cols_{i}"])
    model, k2 = load_native_model(variant_dirs[i], "cpu", torch.float32)
    assert k2 is not None and len(set(model.spec.rope_scales)) > 2  # 1.0 (conv) + one per attention layer
    runtime = k2.runtime(1)

    def logits_of(m, speaker, positions_step=None):
        rows, lens, kw = runtime.prefill_inputs([ids], [speaker])
        if positions_step is not None:
            from kanitts.engine.native.kanitts2 import frame_positions

            kw["positions"] = frame_positions(rows, replace(k2.config, audio_step=positions_step))
        cache = StateCache(m.spec, 1, 64, m.device, m.dtype)
        return m.logits(m.prefill(cache, torch.tensor([0]), rows, lens, **kw))[0][:, cols]

    speaker = speaker_embedding(meta["speaker_seed"] + i)
    with torch.no_grad():
        assert (logits_of(model, speaker) - want).abs().max() <= TOL
        assert (logits_of(model, speaker_embedding(1000)) - want).abs().max() > 1e-2
        assert (logits_of(model, speaker, positions_step=1.0) - want).abs().max() > 1e-2
        plain = load_native_model(variant_dirs[i], "cpu", torch.float32)[0]
        plain.spec = replace(plain.spec, rope_scales=())
        plain._scales = [1.0]
        assert (logits_of(plain, speaker) - want).abs().max() > 1e-2


# -- live reference (kani-tts-2 0.0.5 with transformers 4.5x) -----------------------------------
@pytest.fixture(scope="module")
def ref():
    module = reference_model_module()
    if module is None:
        pytest.skip("kani-tts-2 0.0.5 reference not importable (not installed, or transformers 5: "
                    "see scripts/make_kanitts2_fixture.py)")
    return module


@pytest.mark.parametrize("i", range(len(VARIANTS)))
def test_live_teacher_forced_logits_match_the_reference(ref, variant_dirs, i):
    ids = teacher_forced_ids(11 + i)
    speaker = speaker_embedding(100 + i)
    want = reference_teacher_forced(ref, build_reference(ref, variant_dirs[i]), ids, speaker)
    got = native_teacher_forced(variant_dirs[i], ids, speaker)
    assert (got - want).abs().max().item() <= TOL


@pytest.mark.parametrize("i", range(len(VARIANTS)))
async def test_live_greedy_generation_matches_the_reference(ref, variant_dirs, i):
    speaker = speaker_embedding(200 + i)
    model = build_reference(ref, variant_dirs[i])
    for constrained, rep, n in GREEDY_RUNS:
        want = reference_greedy(model, PROMPT, speaker, n, rep, constrained)
        assert await native_greedy(variant_dirs[i], speaker, n, rep, constrained) == want
