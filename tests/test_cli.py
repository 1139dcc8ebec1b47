"""The command line, run as users run it (a subprocess on the installed entry point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave

import pytest

KANITTS = [sys.executable, "-m", "kanitts.cli"]


def run(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    for k in list(full_env):
        if k.startswith("KANITTS_") and not (env and k in env):
            del full_env[k]
    return subprocess.run([*KANITTS, *args], capture_output=True, text=True, env=full_env, timeout=timeout)


def test_make_tiny_and_say_writes_22k_mono_wav(tmp_path):
    r = run("make-tiny", str(tmp_path / "t"))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "t" / "model" / "config.json").read_text())
    assert cfg["model_type"] == "lfm2" and cfg["vocab_size"] == 80539
    assert cfg["speaker_settings"] == {"status": "multispeaker", "speaker_list": ["andrew", "katie"]}
    out = tmp_path / "o.wav"
    r = run("say", "Hello world.", "-o", str(out), "--model", str(tmp_path / "t" / "model"),
            "--codec", str(tmp_path / "t" / "codec.nemo"), "--seed", "1", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 22050)
        n = w.getnframes()
    assert n > 0 and n % 1764 == 0
    assert "Traceback" not in r.stderr


def test_make_tiny_spanish_voices(tmp_path):
    r = run("make-tiny", str(tmp_path / "es"), "--language", "es", "--voices", "nova,ballad,ash")
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "es" / "model" / "config.json").read_text())
    assert cfg["speaker_settings"]["speaker_list"] == ["nova", "ballad", "ash"]


def test_say_other_formats_and_voice(tiny_model, tiny_codec, tmp_path):
    import av

    out = tmp_path / "o.mp3"
    r = run("say", "Hi there.", "-o", str(out), "--model", tiny_model, "--codec", tiny_codec, "--voice", "katie",
            "--max-tokens", "42")
    assert r.returncode == 0, r.stderr
    with av.open(str(out)) as c:
        assert c.format.name == "mp3"
    assert "voice katie" in r.stderr


def test_an_unknown_flag_is_named_with_the_subcommands_usage(capsys):
    from kanitts.cli import main

    for argv, prog in ((["serve", "--modle", "x"], "kanitts serve"), (["config", "show", "--bogus"], "kanitts config show")):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and f"usage: {prog}" in err and f"{prog}: error: unrecognized arguments" in err


def test_say_refuses_an_extension_that_names_no_format(tiny_model, tiny_codec, tmp_path):
    r = run("say", "Hi.", "-o", str(tmp_path / "x.m4a"), "--model", tiny_model, "--codec", tiny_codec)
    assert r.returncode == 1 and "'.m4a'" in r.stderr and "--format" in r.stderr
    assert not (tmp_path / "x.m4a").exists()


def test_say_unknown_voice_is_one_line(tiny_model, tiny_codec, tmp_path):
    r = run("say", "Hi.", "-o", str(tmp_path / "x.wav"), "--model", tiny_model, "--codec", tiny_codec,
            "--voice", "darth")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr and "darth" in r.stderr


@pytest.mark.parametrize("missing", ["model", "codec"])
def test_offline_without_weights_fails_in_one_clear_line(tiny_model, tiny_codec, tmp_path, missing):
    args = ["say", "Hello.", "-o", str(tmp_path / "x.wav")]
    args += ["--codec", tiny_codec] if missing == "model" else ["--model", tiny_model]
    env = {"HF_HOME": str(tmp_path / "hf-empty")}
    r = run(*args, env=env)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.startswith("kanitts: error")]
    assert len(lines) == 1
    name = "nineninesix/kani-tts-400m-en" if missing == "model" else "nvidia/nemo-nano-codec-22khz-0.6kbps-12.5fps"
    assert name in lines[0]


def test_bad_config_is_one_clear_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[engine]\nmode = "turbo"\n')
    r = run("config", "show", "--config", str(cfg))
    assert r.returncode == 1 and "engine.mode" in r.stderr and "Traceback" not in r.stderr


def test_config_show_names_sources(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nport = 9000\n[engine]\nmode = "balanced"\n')
    r = run("config", "show", "--config", str(cfg), "--port", "9100", "--json",
            env={"KANITTS_ENGINE__MODE": "high_performance"})
    assert r.returncode == 0, r.stderr
    rows = {row["key"]: row for row in json.loads(r.stdout)}
    assert rows["server.port"] == {"key": "server.port", "value": 9100, "source": "cli"}
    assert rows["engine.mode"]["source"] == "env" and rows["engine.mode"]["value"] == "high_performance"
    assert rows["generation.temperature"]["source"] == "default"
    r = run("config", "show", "--config", str(cfg))
    assert "server.port" in r.stdout and "# file:" in r.stdout
    # --model shows what `serve --model` uses: that model alone, for the default language
    r = run("config", "show", "--model", "/some/model", "--json")
    rows = {row["key"]: row for row in json.loads(r.stdout)}
    assert rows["languages.en.model"] == {"key": "languages.en.model", "value": "/some/model", "source": "cli"}
    assert rows["multi_language"]["value"] is False and rows["multi_language"]["source"] == "cli"


def test_config_show_names_what_the_mode_sets():
    """Engine keys left unset show the mode's value (only those the backend honours), and the
    table names what the mode sets for the native engine beyond the keys."""
    r = run("config", "show", "--json", env={"KANITTS_ENGINE__MAX_MODEL_LEN": "1024"})
    rows = {row["key"]: row for row in json.loads(r.stdout)}
    assert rows["engine.max_num_seqs"] == {"key": "engine.max_num_seqs", "value": 4, "source": "mode:low_vram"}
    assert rows["engine.max_model_len"]["value"] == 1024 and rows["engine.max_model_len"]["source"] == "env"
    # the native engine ignores vLLM's KV cache size; vLLM takes it from the preset
    assert rows["engine.kv_cache_memory_bytes"]["value"] is None
    r = run("config", "show", "--json", "--backend", "vllm")
    rows = {row["key"]: row for row in json.loads(r.stdout)}
    assert rows["engine.kv_cache_memory_bytes"] == {"key": "engine.kv_cache_memory_bytes", "value": 128 << 20,
                                                    "source": "mode:low_vram"}
    r = run("config", "show", env={"CUBLAS_WORKSPACE_CONFIG": ":4096:8"})
    assert "engine.max_num_seqs" in r.stdout and "# mode:low_vram" in r.stdout
    assert "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True" in r.stdout
    assert "CUBLAS_WORKSPACE_CONFIG=:16:8 (yours wins: :4096:8)" in r.stdout
    assert "attend over all engine.max_model_len positions" in r.stdout
    r = run("config", "show", "--mode", "balanced")
    assert "# mode:balanced" in r.stdout and "process environment" not in r.stdout


def test_help_lists_commands():
    r = run("--help")
    for cmd in ("serve", "say", "bench", "make-tiny", "config"):
        assert cmd in r.stdout
    r = run("serve", "--help")
    for flag in ("--host", "--port", "--model", "--codec", "--config", "--backend", "--mode", "--gpus"):
        assert flag in r.stdout
