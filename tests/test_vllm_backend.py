"""CPU tests of the vLLM backend seams (vLLM absent in CI)."""
import importlib
import sys

import pytest

from kanitts.engine.base import SamplingParams
from kanitts.engine.vllm_backend import (
    VLLM_MISSING,
    VllmBackend,
    build_sampling_params,
    sampling_kwargs,
    warmup_prompt,
)
from kanitts.engine.vllm_logits import EXTRA_ARGS_KEY, LOGITS_PROCESSOR_FQCN
from kanitts.tokens import END_OF_AI, END_OF_HUMAN, END_OF_SPEECH, START_OF_HUMAN


class FakeSP:
    def __init__(self, **kw):
        self.kw = kw


def test_module_imports_without_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    import kanitts.engine.vllm_backend as vb
    import kanitts.engine.vllm_logits as vl

    importlib.reload(vl)
    importlib.reload(vb)
    assert not vb.vllm_available() or True
    with pytest.raises(RuntimeError, match="pip install 'kanitts-vllm\\[vllm\\]'"):
        vb.import_vllm()
    importlib.reload(vl)
    importlib.reload(vb)


def test_start_without_vllm_is_clear(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    import asyncio

    b = VllmBackend("/m", {"max_num_seqs": 2})
    with pytest.raises(RuntimeError) as e:
        asyncio.run(b.start())
    assert VLLM_MISSING in str(e.value)
    assert not b.ready


def test_sample_mode_mapping():
    p = SamplingParams(temperature=0.6, top_p=0.95, repetition_penalty=1.1, max_tokens=500, min_tokens=500, seed=3)
    kw = sampling_kwargs(p, "sample")
    assert kw["temperature"] == 0.0 and kw["top_p"] == 1.0 and kw["repetition_penalty"] == 1.0
    assert "seed" not in kw
    assert kw["ignore_eos"] is True and kw["min_tokens"] == 500 and kw["max_tokens"] == 500
    assert kw["stop_token_ids"] == [END_OF_SPEECH, END_OF_AI]
    assert kw["detokenize"] is False
    k = kw["extra_args"][EXTRA_ARGS_KEY]
    assert k == {"mode": "sample", "temperature": 0.6, "top_p": 0.95, "repetition_penalty": 1.1, "seed": 3}


def test_mask_and_off_modes_use_native_sampling():
    p = SamplingParams(seed=None, max_tokens=100)
    m = sampling_kwargs(p, "mask")
    assert m["temperature"] == 0.6 and m["repetition_penalty"] == 1.1 and m["extra_args"][EXTRA_ARGS_KEY]["mode"] == "mask"
    assert m["ignore_eos"] is False and m["min_tokens"] == 0
    o = sampling_kwargs(p, "off")
    assert "extra_args" not in o and o["top_p"] == 0.95
    u = sampling_kwargs(p.with_(constrained=False), "sample")
    assert "extra_args" not in u and u["temperature"] == 0.6


def test_min_tokens_clamped_and_bad_mode():
    kw = sampling_kwargs(SamplingParams(max_tokens=10, min_tokens=50))
    assert kw["min_tokens"] == 10 and kw["ignore_eos"]
    with pytest.raises(ValueError):
        sampling_kwargs(SamplingParams(), "fast")


def test_build_sampling_params_with_fake_class():
    sp = build_sampling_params(SamplingParams(max_tokens=5), FakeSP, output_kind="DELTA")
    assert isinstance(sp, FakeSP) and sp.kw["output_kind"] == "DELTA" and sp.kw["max_tokens"] == 5


def test_engine_args_get_processor_and_token_prompts():
    b = VllmBackend("/m", {"max_num_seqs": 4})
    a = b.full_engine_args()
    assert a["model"] == "/m" and a["skip_tokenizer_init"] is True
    assert a["logits_processors"] == [LOGITS_PROCESSOR_FQCN]
    assert "logits_processors" not in VllmBackend("/m", {}, restrict="off").full_engine_args()
    with pytest.raises(ValueError):
        VllmBackend("/m", {}, restrict="nope")


def test_stream_before_start():
    import asyncio

    async def go():
        async for _ in VllmBackend("/m").stream([1], SamplingParams()):
            pass

    with pytest.raises(RuntimeError):
        asyncio.run(go())


def test_warmup_prompt_layout():
    p = warmup_prompt(3)
    assert p[0] == START_OF_HUMAN and p[-1] == END_OF_HUMAN


class _Out:
    def __init__(self, ids, finished):
        self.outputs = [type("C", (), {"token_ids": ids})()]
        self.finished = finished


class _FakeEngine:
    """Mimics AsyncLLM.generate/abort for the stream/abort bookkeeping."""

    def __init__(self, n=10):
        self.n = n
        self.aborted = []
        self.closed = []

    def generate(self, prompt, sp, request_id):
        eng = self

        async def gen():
            try:
                for i in range(eng.n):
                    yield _Out([100 + i], i == eng.n - 1)
            except GeneratorExit:
                eng.closed.append(request_id)
                raise

        return gen()

    async def abort(self, rid):
        self.aborted.append(rid)


def _backend(n=10, cls=VllmBackend):
    b = cls("/m", warmup=False)
    b._engine = _FakeEngine(n)
    b._sp_cls = FakeSP
    return b


async def test_stream_full_and_stats():
    b = _backend(5)
    got = [ids async for ids in b.stream([1, 2], SamplingParams(), request_id="a")]
    assert got == [[100], [101], [102], [103], [104]]
    assert b.stats.requests_finished == 1 and b.stats.tokens_generated == 5 and b.stats.active_requests == 0
    assert b._engine.aborted == []


async def test_stream_close_aborts():
    b = _backend(50)
    s = b.stream([1], SamplingParams(), request_id="r1")
    assert await s.__anext__() == [100]
    await s.aclose()
    assert b._engine.aborted == ["r1"] and b._engine.closed == ["r1"]
    assert b.stats.requests_aborted == 1 and b.stats.active_requests == 0


def test_opening_is_teacher_forced():
    from kanitts.engine.vllm_backend import with_opening
    from kanitts.tokens import START_OF_AI, START_OF_SPEECH

    p = warmup_prompt(1)
    assert with_opening(p) == [*p, START_OF_AI, START_OF_SPEECH]
    assert with_opening([1, 2, 3]) == [1, 2, 3]  # custom templates: untouched
    assert with_opening([]) == []


async def test_stream_sends_prompt_with_opening_and_overrides():
    from kanitts.tokens import START_OF_AI, START_OF_SPEECH

    from kanitts.bench.sampling_paths import SamplingPathBackend  # per-request vLLM overrides: benchmarks only

    b = _backend(2, SamplingPathBackend)
    seen = {}
    orig = b._engine.generate

    def gen(prompt, sp, request_id):
        seen["prompt"], seen["sp"] = prompt, sp
        return orig(prompt, sp, request_id)

    b._engine.generate = gen
    b._delta = "DELTA"
    p = warmup_prompt(2)
    _ = [ids async for ids in b.stream(p, SamplingParams(), vllm_overrides={"extra_args": {"x": 1}})]
    assert seen["prompt"]["prompt_token_ids"] == [*p, START_OF_AI, START_OF_SPEECH]
    assert seen["sp"].kw["extra_args"] == {"x": 1} and seen["sp"].kw["output_kind"] == "DELTA"
    b.force_opening = False
    _ = [ids async for ids in b.stream(p, SamplingParams())]
    assert seen["prompt"]["prompt_token_ids"] == p
