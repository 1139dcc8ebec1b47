"""Capacity sizing: admission limit and codec pool follow the engines unless configured."""

from kanitts.config import load_settings
from kanitts.models import admission_limit, codec_pool_size, engine_capacity


def settings(**cli):
    return load_settings(None, cli, env=False)


def test_vllm_capacity_follows_max_num_seqs():
    s = settings(engine={"backend": "vllm", "mode": "low_vram"})  # 4 seqs x the default languages
    n = 4 * len(s.active_languages())  # en, es, de: three models
    assert n == 12 and engine_capacity(s) == n and admission_limit(s) == n and codec_pool_size(s) == n
    s = settings(engine={"backend": "vllm", "mode": "high_performance"}, multi_language=False)
    assert admission_limit(s) == 512  # the HTTP layer never throttles a batch the engine can run
    assert codec_pool_size(s) == 256  # codec slots are capped by default
    s = settings(engine={"backend": "vllm", "mode": "balanced", "max_num_seqs": 10, "gpus": [0, 1]},
                 multi_language=False)
    assert engine_capacity(s) == 20


def test_explicit_values_win():
    s = settings(engine={"backend": "vllm"}, server={"max_concurrent": 3}, codec={"max_streams": 5})
    assert admission_limit(s) == 3 and codec_pool_size(s) == 5


def test_native_capacity_follows_max_num_seqs_and_the_retired_torch_name_sizes_like_it():
    s = settings(engine={"backend": "native", "mode": "balanced"}, multi_language=False)
    assert admission_limit(s) == 64 and codec_pool_size(s) == 64  # the balanced preset's 64 slots
    old = settings(engine={"backend": "torch", "mode": "balanced"}, multi_language=False)
    assert old.engine.backend == "native"
    assert admission_limit(old) == 64 and codec_pool_size(old) == 64


async def test_codec_device_setting(tiny_model, tiny_codec):
    from _liveserver import tiny_settings

    from kanitts.service import TTSService

    svc = TTSService(tiny_settings(tiny_model, tiny_codec, codec={"device": "cpu", "dtype": "float32"}))
    await svc.start()
    try:
        assert str(svc.codec.device) == "cpu" and svc.codec_worker.fast
        st = svc.codec_worker._pool.stats()  # CPU: the fused channels-last walk, eager
        assert st["layout"] == "nlc" and not st["cuda_graphs"] and not st["compiled"]
    finally:
        await svc.close()
