import pytest

from kanitts.engine.modes import DEFAULT_MODE, MODES, engine_args_for, seed_baseline_args


def test_modes_present():
    assert set(MODES) >= {"low_vram", "balanced", "high_performance", "fp8", "bnb_4bit"}
    assert DEFAULT_MODE == "low_vram"


def test_low_vram_uses_bytes_not_fraction():
    a = engine_args_for("low_vram", "/m")
    assert a["model"] == "/m"
    assert a["kv_cache_memory_bytes"] <= 256 * 2**20
    # utilization is only vLLM's start-up free-memory check here: small, so that the codec
    # (loaded first on the same GPU) cannot make the engine refuse to start
    assert a["gpu_memory_utilization"] <= 0.05
    assert a["max_num_seqs"] <= 8


def test_every_preset_with_bytes_has_a_small_startup_check():
    for name, preset in MODES.items():
        if "kv_cache_memory_bytes" in preset:
            assert preset["gpu_memory_utilization"] <= 0.3, name


def test_quantized_modes():
    assert engine_args_for("fp8", "m")["quantization"] == "fp8"
    assert engine_args_for("bnb_4bit", "m")["quantization"] == "bitsandbytes"
    hp = engine_args_for("high_performance", "m")
    assert hp["max_num_seqs"] >= 256 and hp["kv_cache_memory_bytes"] >= 12 * 2**30


def test_overrides_one_by_one_and_none_ignored():
    a = engine_args_for("balanced", "m", {"max_num_seqs": 7, "dtype": None, "tensor_parallel_size": 2})
    assert a["max_num_seqs"] == 7 and a["dtype"] == "bfloat16" and a["tensor_parallel_size"] == 2
    b = engine_args_for("low_vram", "m", {"gpu_memory_utilization": 0.3})
    assert b["gpu_memory_utilization"] == 0.3 and "kv_cache_memory_bytes" not in b
    c = engine_args_for("high_performance", "m", {"gpu_memory_utilization": 0.5, "kv_cache_memory_bytes": 1 << 34})
    assert c["gpu_memory_utilization"] == 0.5 and c["kv_cache_memory_bytes"] == 1 << 34
    # modes are not mutated by overrides
    assert "kv_cache_memory_bytes" in MODES["low_vram"]


def test_unknown_mode_lists_modes():
    with pytest.raises(ValueError) as e:
        engine_args_for("turbo", "m")
    for m in MODES:
        assert m in str(e.value)


def test_seed_baseline():
    s = seed_baseline_args("m")
    assert s == {"model": "m", "dtype": "bfloat16", "max_num_seqs": 1, "gpu_memory_utilization": 0.15,
                 "max_model_len": 512, "max_num_batched_tokens": 512}


def test_presets_stream_one_output_per_frame_and_override():
    """Every preset streams one engine output per codec frame (4 tokens); the setting is
    overridable through the config object, the environment and the CLI."""
    from kanitts.cli import build_parser, cli_overrides
    from kanitts.config import Settings

    for mode in MODES:
        assert engine_args_for(mode, "m")["stream_interval"] == 4
    assert "stream_interval" not in seed_baseline_args("m")  # vLLM's default, 1: one per token
    s = Settings(engine={"stream_interval": 1})
    assert engine_args_for("low_vram", "m", s.engine.vllm_overrides())["stream_interval"] == 1
    args = build_parser().parse_args(["serve", "--stream-interval", "8"])
    assert cli_overrides(args)["engine"]["stream_interval"] == 8
