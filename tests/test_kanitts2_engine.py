"""KaniTTS-2 in the native engine (CPU, float32): detection and loading, the per-slot decode
position rule, speaker embeddings per request (validation, batching without cross-talk),
``make-tiny --kanitts2`` through the CLI, the v2 prompt, and v1-only backends refusing v2."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kanitts import tokens as t
from kanitts.engine.base import GenerationBackend, SamplingParams
from kanitts.engine.native.backend import NativeBackend
from kanitts.engine.native.kanitts2 import Kani2Config, frame_positions, load_native_model
from kanitts.hub import ModelLoadError
from kanitts.tiny_kanitts2 import write_kanitts2_model

PROMPT = [t.START_OF_HUMAN, t.START_OF_TEXT, 40, 41, 42, t.END_OF_TEXT, t.END_OF_HUMAN]


@pytest.fixture(scope="module")
def k2_model(tmp_path_factory) -> str:
    return str(write_kanitts2_model(tmp_path_factory.mktemp("k2"), seed=3, audio_step=0.5, learnable_rope=True))


def unit(seed: int) -> tuple[float, ...]:
    e = torch.randn(128, generator=torch.Generator().manual_seed(seed))
    return tuple((e / e.norm()).tolist())


async def started(path: str, **kw) -> NativeBackend:
    kw.setdefault("max_num_seqs", 8)
    kw.setdefault("max_model_len", 128)
    b = NativeBackend(path, device="cpu", dtype="float32", **kw)
    await b.start()
    return b


async def run(b: GenerationBackend, params: SamplingParams, prompt: list[int] = PROMPT) -> list[int]:
    out: list[int] = []
    async for ids in b.stream(prompt, params):
        out += ids
    return out


def test_detection_reads_the_v2_keys_and_ignores_v1_configs(tiny_model):
    v1 = json.loads((Path(tiny_model) / "config.json").read_text())
    assert Kani2Config.detect(v1) is None
    assert Kani2Config.detect({"architectures": ["KaniTTS2ForCausalLM"]}) == Kani2Config()
    cfg = Kani2Config.detect({"audio_step": 0.5, "use_learnable_rope": True, "alpha_max": 3.0})
    assert cfg == Kani2Config(audio_step=0.5, use_learnable_rope=True, alpha_max=3.0)
    with pytest.raises(ValueError):
        Kani2Config.detect({"audio_step": -1.0})
    with pytest.raises(ValueError):
        Kani2Config.detect({"alpha_min": 2.0, "alpha_max": 1.0})


def test_prompt_positions_count_text_rows_and_whole_frames():
    a = [t.audio_token(k, 7) for k in range(4)]
    ids = torch.tensor([[t.START_OF_HUMAN, t.PAD, 5, t.START_OF_SPEECH, *a, *a, t.END_OF_SPEECH]])
    half = frame_positions(ids, Kani2Config(audio_step=0.5))[0].tolist()
    assert half == [0, 1, 2, 3, 4, 4, 4, 4, 4.5, 4.5, 4.5, 4.5, 5]
    one = frame_positions(ids, Kani2Config(audio_step=1.0))[0].tolist()
    assert one == [0, 1, 2, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6]


def test_decode_positions_follow_the_reference_rule(k2_model):
    """Text tokens sit at their cache index; the first audio token opens a frame at its cache
    index, every 4th audio token after it moves the frame by audio_step (0.5 here); a text
    token after audio goes back to its cache index; slots keep their own state; reset clears it."""
    _, k2 = load_native_model(k2_model, "cpu", torch.float32)
    assert k2 is not None
    rt = k2.runtime(2)
    rt.reset(torch.tensor([0, 1]))
    a = [t.audio_token(k % 4, 1) for k in range(9)]
    feed = [t.START_OF_AI, t.START_OF_SPEECH, *a, t.END_OF_SPEECH]
    got = []
    for c, tok in enumerate(feed, start=10):
        other = t.audio_token(0, 5) if c >= 15 else t.START_OF_SPEECH  # slot 1: audio from cache index 15
        got.append(rt.decode_positions(torch.tensor([tok, other]), torch.tensor([c, c + 30])).tolist())
    assert [g[0] for g in got] == [10, 11, 12, 12, 12, 12, 12.5, 12.5, 12.5, 12.5, 13, 21]
    assert [g[1] for g in got] == [40, 41, 42, 43, 44, 45, 45, 45, 45, 45.5, 45.5, 45.5]
    assert rt.audio_count.tolist() == [9, 7]
    rt.reset(torch.tensor([1]))
    assert rt.audio_count.tolist() == [9, 0] and rt.frame_pos.tolist() == [13.0, 0.0]


def test_loading_errors_name_the_missing_tensor(k2_model, tmp_path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(Path(k2_model) / "model.safetensors"))
    for drop, what in (("model.speaker_emb_projection.weight", "speaker_emb_projection"),
                       ("model.learnable_rope_layers.1.alpha_weight", "learnable_rope_layers.1")):
        folder = tmp_path / drop
        shutil.copytree(k2_model, folder)
        save_file({k: v for k, v in state.items() if k != drop}, str(folder / "model.safetensors"))
        with pytest.raises(ModelLoadError, match=what):
            load_native_model(folder)


async def test_32_streams_with_32_voices_in_one_batch_match_each_alone(k2_model):
    """Each stream: its own speaker embedding, prompt length and seed (one without a speaker);
    alone, then all 32 admitted together (one batched prefill, one decode batch)."""
    prompts = [[*PROMPT[:-2], *range(50, 50 + i % 9), *PROMPT[-2:]] for i in range(32)]
    params = [SamplingParams(seed=i, temperature=1.0, top_p=0.95, max_tokens=40, min_tokens=40,
                             speaker_embedding=None if i == 31 else unit(i)) for i in range(32)]
    b = await started(k2_model, max_num_seqs=32)
    try:
        alone = [await run(b, p, q) for p, q in zip(params, prompts)]
        steps = b.scheduler.stats.steps if b.scheduler else 0
        together = await asyncio.gather(*(run(b, p, q) for p, q in zip(params, prompts)))
        assert b.scheduler is not None and b.scheduler.stats.peak_active == 32
        assert b.scheduler.stats.steps - steps <= 41  # they did share the decode steps
    finally:
        await b.close()
    assert together == alone
    assert len({tuple(a) for a in alone}) == 32
    for toks in alone:
        t.FrameParser().feed(toks)


async def test_the_speaker_embedding_steers_generation_and_is_validated(k2_model, tiny_model):
    b = await started(k2_model, max_model_len=64)
    try:
        greedy = SamplingParams(temperature=0.0, max_tokens=24)
        a = await run(b, greedy.with_(speaker_embedding=unit(1)))
        assert await run(b, greedy.with_(speaker_embedding=unit(1))) == a
        assert await run(b, greedy.with_(speaker_embedding=unit(2))) != a
        assert await run(b, greedy) != a  # no speaker row at all
        with pytest.raises(ValueError, match="128"):
            await run(b, greedy.with_(speaker_embedding=(0.1,) * 127))
        with pytest.raises(ValueError, match="finite"):
            await run(b, greedy.with_(speaker_embedding=(float("nan"),) * 128))
        # the speaker row takes a position: prompt (7 + 2 opening + 1) + generated == 64
        toks = await run(b, SamplingParams(seed=0, max_tokens=1000, speaker_embedding=unit(3)))
        assert len(toks) == 64 - len(t.with_opening(PROMPT)) - 1
        full = [t.START_OF_HUMAN, *range(10, 72)]  # 63 tokens: fits 64 positions alone, not with the row
        assert len(await run(b, SamplingParams(seed=0, max_tokens=5, constrained=False), full)) == 1
        with pytest.raises(ValueError, match="max_model_len"):
            await run(b, greedy.with_(speaker_embedding=unit(3)), full)
    finally:
        await b.close()
    v1 = await started(tiny_model)
    try:
        with pytest.raises(ValueError, match="not a KaniTTS-2 model"):
            await run(v1, SamplingParams(speaker_embedding=unit(1)))
    finally:
        await v1.close()


async def test_make_tiny_kanitts2_cli_writes_a_model_the_engine_clones_voices_with(tmp_path):
    """``kanitts make-tiny --kanitts2``: reference audio -> speaker encoder -> embedding ->
    the engine, all through public APIs, with the language tag from the model's list."""
    from transformers import AutoTokenizer

    from kanitts.speaker import load_speaker_encoder

    proc = subprocess.run([sys.executable, "-m", "kanitts.cli", "make-tiny", "--kanitts2", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((tmp_path / "model" / "config.json").read_text())
    assert Kani2Config.detect(cfg) is not None and (tmp_path / "codec.nemo").is_file()
    tags = t.language_tags_from_config(cfg)
    assert tags and t.pick_language_tag("en", tags) == "en_us"
    encoder = load_speaker_encoder(tmp_path / "speaker")
    wave = torch.randn(1, 16000 * 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        emb = encoder(wave)[0]
    assert emb.shape == (128,)
    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    prompt = t.build_kanitts2_prompt(tok, "Hello world.", t.pick_language_tag("en", tags))
    assert prompt[:2] == [t.START_OF_HUMAN, t.START_OF_TEXT] and prompt[-2:] == [t.END_OF_TEXT, t.END_OF_HUMAN]
    assert tok.decode(prompt[2:-2]) == "en_us: Hello world."
    b = await started(str(tmp_path / "model"))
    try:
        toks = await run(b, SamplingParams(seed=1, max_tokens=20, min_tokens=20,
                                           speaker_embedding=tuple(emb.tolist())), prompt)
    finally:
        await b.close()
    assert len(t.FrameParser().feed(toks)) == 5


def test_language_tags_are_picked_from_the_models_list():
    tags = ["en_us", "en_bost", "es", "ky"]
    assert t.pick_language_tag("en", tags) == "en_us"
    assert t.pick_language_tag("en-BOST", tags) == "en_bost"
    assert t.pick_language_tag("es-MX", tags) == "es"
    assert t.pick_language_tag("de", tags) is None
    assert t.pick_language_tag("en", None) is None
    assert t.language_tags_from_config({"language_settings": {"status": "no_language_tags",
                                                              "language_tags_list": ["x"]}}) is None
    assert t.language_tags_from_config({}) is None


async def test_vllm_refuses_a_kanitts2_model_and_a_v1_model_speaker_embeddings(k2_model, tiny_model, monkeypatch):
    from kanitts.engine import vllm_backend
    from kanitts.engine.vllm_backend import VllmBackend

    monkeypatch.setattr(vllm_backend, "import_vllm", lambda: None)  # the check comes before any engine
    with pytest.raises(ModelLoadError, match="v1"):
        await VllmBackend(k2_model, warmup=False).start()
    voiced = SamplingParams(max_tokens=4, speaker_embedding=unit(0))
    with pytest.raises(ValueError, match="speaker embedding"):
        VllmBackend(tiny_model, warmup=False).stream(PROMPT, voiced)
    tb = await started(tiny_model)  # the native engine with a v1 model: the same refusal
    try:
        with pytest.raises(ValueError, match="speaker embedding"):
            await run(tb, voiced)
        assert len(await run(tb, voiced.with_(speaker_embedding=None))) == 4
    finally:
        await tb.close()
