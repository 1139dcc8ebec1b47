"""Start-up errors a person can act on, `say` to stdout and its progress bar, `--help`
everywhere: each through the command line, as users run it (issue 17)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

KANITTS = [sys.executable, "-m", "kanitts.cli"]
HUB_IDS = ("nineninesix/kani-tts-400m-en", "nineninesix/kani-tts-400m-es",
           "nvidia/nemo-nano-codec-22khz-0.6kbps-12.5fps")


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KANITTS_")}
    return {**env, "HF_HUB_OFFLINE": "1", **(extra or {})}


def run(*args: str, env: dict | None = None, timeout: int = 300, cwd: Path | None = None,
        text: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*KANITTS, *args], capture_output=True, text=text, env=_env(env),
                          timeout=timeout, cwd=cwd)


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("kanitts: error")]


# ---------------------------------------------------------------- 4: offline start-up
@pytest.mark.parametrize("command", ["serve", "say"])
def test_offline_names_every_model_once_with_flags_and_a_download_command(tmp_path, command):
    args = ["serve", "--port", "0"] if command == "serve" else ["say", "Hello.", "-o", str(tmp_path / "x.wav")]
    r = run(*args, env={"HF_HOME": str(tmp_path / "hf-empty")})
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    errors = _errors(r.stderr)
    assert len(errors) == 1, r.stderr
    assert all(i in errors[0] for i in HUB_IDS), errors[0]
    for hint in ("--model", "languages.en.model", "languages.es.model", "--codec", "codec.model",
                 "hf download nineninesix/kani-tts-400m-en"):
        assert hint in r.stderr, hint
    assert "listening" not in r.stderr + r.stdout


# ---------------------------------------------------------------- 5: port in use
def test_port_in_use_is_one_line_and_never_says_listening(tiny_model, tiny_codec):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = run("serve", "--model", tiny_model, "--codec", tiny_codec, "--backend", "native", "--port", str(port))
    assert r.returncode == 1
    out = r.stderr + r.stdout
    assert _errors(r.stderr) == [line for line in out.splitlines() if line.strip()], out
    assert f"127.0.0.1:{port}" in r.stderr and "in use" in r.stderr and "--port" in r.stderr
    assert "listening" not in out and "Traceback" not in out


# ---------------------------------------------------------------- 7: --gpus without CUDA
def test_gpus_without_cuda_is_one_line(tiny_model, tiny_codec):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA devices")
    r = run("serve", "--model", tiny_model, "--codec", tiny_codec, "--gpus", "0,1", "--port", "0")
    assert r.returncode == 1
    out = r.stderr + r.stdout
    assert _errors(r.stderr) == [line for line in out.splitlines() if line.strip()], out
    assert "no CUDA device" in r.stderr and "--gpus 0,1" in r.stderr


# ---------------------------------------------------------------- 8: make-tiny folder as --model
def test_make_tiny_folder_as_model_suggests_its_model_subfolder(tiny_dir, tmp_path):
    r = run("say", "Hi.", "-o", str(tmp_path / "x.wav"), "--model", str(tiny_dir),
            "--codec", str(tiny_dir / "codec.nemo"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"no tokenizer/config.json in {tiny_dir}" in r.stderr
    assert f"did you mean {tiny_dir / 'model'}?" in r.stderr


# ---------------------------------------------------------------- 9: config paths
def test_config_paths_resolve_against_the_config_folder(tiny_dir, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "tiny").symlink_to(tiny_dir, target_is_directory=True)
    (conf / "c.toml").write_text(
        'multi_language = false\n[languages.en]\nmodel = "tiny/model"\n[codec]\nmodel = "./tiny/codec.nemo"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = run("config", "show", "--config", str(conf / "c.toml"), "--json", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    import json

    rows = {row["key"]: row["value"] for row in json.loads(r.stdout)}
    assert rows["languages.en.model"] == str((conf / "tiny" / "model").resolve())
    assert rows["codec.model"] == str((conf / "tiny" / "codec.nemo").resolve())
    out = elsewhere / "x.wav"
    r = run("say", "Hi.", "-o", str(out), "--config", str(conf / "c.toml"), "--max-tokens", "16", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 44


def test_missing_local_path_in_config_is_file_not_found(tiny_model, tmp_path):
    (tmp_path / "c.toml").write_text(
        f'multi_language = false\n[languages.en]\nmodel = "{tiny_model}"\n[codec]\nmodel = "./gone/codec.nemo"\n')
    r = run("say", "Hi.", "-o", str(tmp_path / "x.wav"), "--config", str(tmp_path / "c.toml"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"file not found: {tmp_path / 'gone' / 'codec.nemo'}" in r.stderr
    assert "hub" not in r.stderr.lower()


# ---------------------------------------------------------------- 10: --language
def test_unknown_language_flag_is_about_the_flag(tmp_path):
    r = run("config", "show", "--language", "xx")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "--language xx" in r.stderr and "--model" in r.stderr
    assert "table" not in r.stderr
    r = run("config", "show", "--language", "es", "--json")
    assert r.returncode == 0, r.stderr
    import json

    rows = {row["key"]: row for row in json.loads(r.stdout)}
    assert rows["default_language"]["value"] == "es" and rows["default_language"]["source"] == "cli"


# ---------------------------------------------------------------- 12 + 16: ignored options, -o -
def test_say_to_stdout_warns_about_options_the_backend_ignores(tiny_model, tiny_codec):
    r = run("say", "Hello there.", "-o", "-", "--model", tiny_model, "--codec", tiny_codec, "--backend", "native",
            "--gpu-memory-utilization", "0.5", "--kv-cache-memory-bytes", "1000000", "--seed", "1",
            "--max-tokens", "24", text=False)
    stderr = r.stderr.decode()
    assert r.returncode == 0, stderr
    assert r.stdout[:4] == b"RIFF" and r.stdout[8:12] == b"WAVE" and len(r.stdout) > 44
    warnings = [line for line in stderr.splitlines() if "ignores" in line]
    assert len(warnings) == 1, stderr
    assert "native backend" in warnings[0] and "engine.gpu_memory_utilization = 0.5" in warnings[0]
    assert "engine.kv_cache_memory_bytes = 1000000" in warnings[0]
    assert "stdout:" in stderr
    # piped: no progress bar
    assert "say:" not in stderr and "\r" not in stderr


def test_say_shows_progress_on_a_terminal(tiny_model, tiny_codec, tmp_path):
    import pty

    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        p = subprocess.run([*KANITTS, "say", "Hello there.", "-o", str(tmp_path / "x.wav"), "--model", tiny_model,
                            "--codec", tiny_codec, "--max-tokens", "24"],
                           stdout=subprocess.PIPE, stderr=slave, env=_env(), timeout=300)
    finally:
        os.close(slave)
    reader.join(timeout=30)
    os.close(master)
    shown = b"".join(chunks).decode(errors="replace")
    assert p.returncode == 0, shown
    assert "say:" in shown and "chunk" in shown and "s audio" in shown, shown


# ---------------------------------------------------------------- 18: --help everywhere
SUBCOMMANDS = [[], ["serve"], ["say"], ["make-tiny"], ["bench"], ["config"], ["config", "show"]]


def _option_entries(help_text: str) -> list[tuple[str, str]]:
    """(option, its help text) for every option argparse lists."""
    entries: list[tuple[str, str]] = []
    current: list[str] | None = None
    for line in help_text.splitlines():
        m = re.match(r"^  (-{1,2}[\w-]+)(.*)$", line)
        if m:
            current = [m.group(1), m.group(2)]
            entries.append(current)  # type: ignore[arg-type]
        elif current is not None and line.startswith("    ") and line.strip():
            current[1] += " " + line.strip()
        else:
            current = None
    return [(opt, " ".join(rest.split())) for opt, rest in entries]


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=lambda c: " ".join(c) or "kanitts")
def test_every_option_has_help_and_a_default(cmd):
    r = run(*cmd, "--help")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "``" not in text and ":mod:" not in text and ":func:" not in text
    entries = _option_entries(text)
    assert entries, text
    for opt, help_text in entries:
        if opt in ("-h", "--help", "--version"):
            continue
        # help text beyond the metavar, and the default it falls back to
        assert re.search(r"[a-z]{3,}", help_text), (cmd, opt)
        assert "default" in help_text.lower() or "required" in help_text.lower(), (cmd, opt, help_text)


def test_say_help_lists_no_server_only_flags():
    r = run("say", "--help")
    for flag in ("--host", "--port", "--gpus", "--data-parallel-size"):
        assert flag not in r.stdout, flag
    assert "-o FILE" in r.stdout


# ---------------------------------------------------------------- 20: make-tiny file modes
def test_make_tiny_files_are_readable_like_any_written_file(tmp_path):
    r = run("make-tiny", str(tmp_path / "t"))
    assert r.returncode == 0, r.stderr
    umask = os.umask(0)
    os.umask(umask)
    files = [p for p in (tmp_path / "t").rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


# ------------------------------------------- 4 (KaniTTS-2): the speaker encoder is named too
def test_kanitts2_start_names_the_speaker_encoder_with_its_flag(tmp_path):
    from kanitts.tiny_kanitts2 import make_tiny_kanitts2

    model, codec, speaker = make_tiny_kanitts2(tmp_path / "k2")
    out = tmp_path / "x.wav"
    r = run("say", "Hello.", "-o", str(out), "--model", str(model), "--codec", str(codec),
            env={"HF_HOME": str(tmp_path / "hf-empty")})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    errors = _errors(r.stderr)
    assert len(errors) == 1 and "nineninesix/speaker-emb-tbr" in errors[0], r.stderr
    for hint in ("--speaker-encoder", "voices.speaker_encoder", "hf download nineninesix/speaker-emb-tbr"):
        assert hint in r.stderr, hint
    r = run("say", "Hello.", "-o", str(out), "--model", str(model), "--codec", str(codec),
            "--speaker-encoder", str(speaker), env={"HF_HOME": str(tmp_path / "hf-empty")})
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 44
