"""CPU tests of kanitts.bench's load generation and bookkeeping (no GPU, no vLLM)."""
import asyncio
import json

import httpx
import torch

from kanitts import bench
from kanitts.engine.base import GenerationBackend


def test_percentile():
    assert bench.percentile([], 50) is None
    assert bench.percentile([3, 1, 2], 50) == 2
    assert bench.percentile([0, 10], 95) == 9.5


def _app(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    assert body["response_format"] == "pcm" and body["min_tokens"] == body["max_tokens"] == 500
    pcm = b"\x00\x01" * 22050  # 1 s
    return httpx.Response(200, content=pcm)


async def test_http_load_against_mock_server():
    client = httpx.AsyncClient(transport=httpx.MockTransport(_app))
    lr = await bench.http_load("http://x", 4, 500, client=client)
    s = lr.summary()
    assert s["streams"] == 4 and s["errors"] == 0
    assert all(abs(r.audio_s - 1.0) < 1e-9 for r in lr.streams)
    assert s["ttfa_p50_ms"] is not None and s["all_realtime"]
    assert s["aggregate_tok_s"] is None  # HTTP sees audio, not tokens: no misleading 0.0


async def test_http_error_recorded():
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(503, content=b"busy")))
    s = (await bench.http_load("http://x", 2, 500, client=client)).summary()
    assert s["errors"] == 2 and "503" in s["first_error"] and not s["all_realtime"]


class FakeBackend(GenerationBackend):
    def stream(self, prompt_ids, params, request_id=None, **kw):
        async def gen():
            from kanitts.tokens import START_OF_AI, START_OF_SPEECH, audio_token

            yield [START_OF_AI, START_OF_SPEECH]
            n = 2
            while n < params.max_tokens:
                yield [audio_token((n - 2) % 4, 5)]
                n += 1
                await asyncio.sleep(0)

        return gen()


async def test_engine_stream_lm_only_and_seed_windows():
    r = await bench.engine_stream(FakeBackend(), 102, 0)
    assert r.tokens == 102 and r.error is None and r.ttft_s is not None

    class FakeCodec:
        device = torch.device("cpu")

        def decode(self, codes):
            return torch.zeros(1, codes.shape[2] * 1764)

    sw = bench.SeedWindows(FakeCodec())
    r = await bench.engine_stream(FakeBackend(), 202, 0, seed_windows=lambda: sw)
    assert r.error is None and abs(r.audio_s - 50 * 0.08) < 1e-9 and r.ttfa_s is not None
    assert sw.done == 50


def test_frames_lenient_on_invalid_stream():
    from kanitts.tokens import FrameParser, audio_token

    p = FrameParser()
    f = bench.frames_lenient(p, [audio_token(2, 1), audio_token(0, 2), audio_token(1, 3), audio_token(3, 4), 5])
    assert f == [[1, 2, 3, 4]]


def test_parser_and_append_json(tmp_path):
    a = bench.build_parser().parse_args(["--engine-only", "--concurrency", "1,16", "--baseline", "seed"])
    assert a.concurrency == [1, 16] and a.engine_only and a.baseline == "seed"
    f = tmp_path / "x.json"
    bench.append_json(f, {"a": 1})
    bench.append_json(f, {"b": 2})
    assert json.loads(f.read_text()) == [{"a": 1}, {"b": 2}]


def test_client_process_count():
    assert bench.client_processes(1) == 1 and bench.client_processes(32) == 1
    assert bench.client_processes(256) == min(8, max(1, min(16, (__import__("os").cpu_count() or 2) // 2)))
    assert bench.client_processes(256, 3) == 3 and bench.client_processes(2, 8) == 2


async def test_http_load_from_several_client_processes(tiny_model, tiny_codec):
    """Streams split over client processes that start together; every stream is counted
    once and carries its own TTFA."""
    from _liveserver import LiveServer, tiny_settings

    from kanitts.server.app import create_app

    with LiveServer(create_app(tiny_settings(tiny_model, tiny_codec))) as srv:
        lr = await bench.http_load(srv.url, 5, 24, processes=2)
    s = lr.summary()
    assert s["streams"] == 5 and s["errors"] == 0, s
    assert all(r.ttfa_s is not None and r.audio_s > 0 for r in lr.streams)
    assert 0 < lr.wall_s < 120


def test_serving_stream_has_the_contract_signature():
    """Per-request sampling switches live in the benchmark's backend, not in VllmBackend."""
    import inspect

    from kanitts.engine.vllm_backend import VllmBackend

    assert inspect.signature(VllmBackend.stream) == inspect.signature(GenerationBackend.stream)


async def test_sampling_paths_round1_and_overrides():
    from kanitts.bench.sampling_paths import SamplingPathBackend
    from kanitts.engine.base import SamplingParams
    from kanitts.engine.vllm_logits import EXTRA_ARGS_KEY, LOGITS_PROCESSOR_FQCN

    class Out:
        def __init__(self, ids):
            self.outputs, self.finished = [type("O", (), {"token_ids": ids})()], True

    class Engine:
        def __init__(self):
            self.sps = []

        def generate(self, prompt, sp, request_id):
            self.sps.append(sp)

            async def gen():
                yield Out([7])

            return gen()

    b = SamplingPathBackend("/m", {"max_num_seqs": 4}, warmup=False, round1=True)
    procs = b.full_engine_args()["logits_processors"]
    assert procs == ["kanitts.bench.round1_logits:KaniCodebookLogitsProcessor", LOGITS_PROCESSOR_FQCN]
    b._engine, b._sp_cls, b._delta = Engine(), dict, "DELTA"
    p = SamplingParams(max_tokens=8, min_tokens=8, seed=3)
    for kw in ({}, {"restrict": "off"}, {"restrict": "sample_old"}, {"vllm_overrides": {"seed": 9}}):
        assert [ids async for ids in b.stream([1], p, **kw)] == [[7]]
    default, off, old, over = b._engine.sps
    assert default["extra_args"][EXTRA_ARGS_KEY]["mode"] == "sample" and default["output_kind"] == "DELTA"
    assert "extra_args" not in off and off["temperature"] == 0.6
    assert old["extra_args"] == {"kanitts_old": default["extra_args"][EXTRA_ARGS_KEY]} and old["temperature"] == 0.0
    assert over["seed"] == 9 and over["extra_args"] == default["extra_args"]
