"""``kanitts`` command line: serve, say, bench, make-tiny, config show."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kanitts import __version__
from kanitts.audio import FORMATS, MAX_SPEED, MIN_SPEED, format_for_suffix
from kanitts.engine import BACKEND_NAMES, DEPRECATED_BACKENDS
from kanitts.engine.modes import MODE_NAMES, MODES, NATIVE_MODE_ENV, NATIVE_MODE_OPTIONS

if TYPE_CHECKING:
    from kanitts.server.schemas import SpeechRequest

logger = logging.getLogger("kanitts")

EXIT_ERROR = 1


def _config_default(key: str) -> str:
    """The built-in default of a config key (``engine.mode``), as ``--help`` shows it:
    ``default: engine.mode = low_vram`` (``unset`` for None: the mode preset or backend decides)."""
    from kanitts.config import Settings

    section, _, name = key.rpartition(".")
    value = Settings.model_fields[section].annotation() if section else None  # the section's defaults
    v = getattr(value, name) if value is not None else Settings.model_fields[name].default
    shown = "unset" if v is None else (",".join(map(str, v)) if isinstance(v, list) else v)
    return f"default: {key} = {shown}"


def _add_common(p: argparse.ArgumentParser) -> None:
    backends = [*BACKEND_NAMES, *DEPRECATED_BACKENDS]
    p.add_argument("--config", metavar="FILE",
                   help="TOML config file; relative paths in it are relative to its folder "
                        "(default: $KANITTS_CONFIG, else none)")
    p.add_argument("--model", metavar="ID_OR_DIR",
                   help="use only this model (hub id or local folder holding config.json and the "
                        "tokenizer) for --language (default: languages.*.model, every configured language)")
    p.add_argument("--codec", metavar="ID_OR_PATH",
                   help=f"NanoCodec .nemo: hub id, file or folder ({_config_default('codec.model')})")
    p.add_argument("--speaker-encoder", metavar="ID_OR_DIR",
                   help="KaniTTS-2 speaker encoder for voice cloning: hub id or folder "
                        f"({_config_default('voices.speaker_encoder')}; loaded only for KaniTTS-2 models)")
    p.add_argument("--language", metavar="CODE",
                   help="language of --model; without --model, one of the configured languages to use "
                        f"as the default ({_config_default('default_language')})")
    p.add_argument("--backend", choices=backends,
                   help="generation backend; auto = the native engine, vLLM for quantized modes and "
                        "tensor parallel; "
                        + "; ".join(f"{old} = deprecated alias of {new}" for old, new in DEPRECATED_BACKENDS.items())
                        + f" ({_config_default('engine.backend')})")
    p.add_argument("--device", help=f"auto | cpu | cuda | cuda:N | mps ({_config_default('engine.device')})")
    p.add_argument("--mode", choices=list(MODE_NAMES),
                   help="performance mode: engine sizes for native and vLLM; "
                        + ", ".join(m for m in MODE_NAMES if m in NATIVE_MODE_OPTIONS or m in NATIVE_MODE_ENV)
                        + " also sets native-engine options and, on CUDA, process environment variables "
                        f"('kanitts config show' lists what a mode sets) ({_config_default('engine.mode')})")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: off)")


def _add_engine(p: argparse.ArgumentParser, *, server: bool) -> None:
    """Engine overrides; ``server``: also the replica options (one server, several engines)."""
    g = p.add_argument_group("engine overrides (each overrides the mode's preset; start-up warns "
                             "about any the backend ignores)")

    def opt(flag: str, what: str, **kw: Any) -> None:
        default = _config_default("engine." + flag.lstrip("-").replace("-", "_"))
        preset = ": the mode's preset" if default.endswith("unset") else ""
        g.add_argument(flag, help=f"{what} ({default}{preset})", **kw)

    opt("--gpu-memory-utilization", "fraction of GPU memory vLLM may use", type=float, metavar="FRACTION")
    opt("--kv-cache-memory-bytes", "vLLM: KV cache size in bytes (the native engine sizes its own from "
        "max-num-seqs x max-model-len)", type=int, metavar="BYTES")
    opt("--max-model-len", "longest sequence in tokens (prompt + audio)", type=int, metavar="TOKENS")
    opt("--max-num-seqs", "sequences generated at once", type=int, metavar="N")
    opt("--max-num-batched-tokens", "tokens per engine step (native: per batched prefill)", type=int, metavar="N")
    opt("--tensor-parallel-size", "GPUs one engine is split over", type=int, metavar="N")
    opt("--quantization", "vLLM quantization method (e.g. fp8)", metavar="METHOD")
    eager_modes = [m for m, a in MODES.items() if a.get("enforce_eager")]
    g.add_argument("--enforce-eager", action="store_true", default=None,
                   help="no CUDA graphs (vLLM; native: neither the decode nor the prefill graphs) "
                        f"(default: off{', on in ' + ', '.join(eager_modes) if eager_modes else ''}; "
                        "engine.enforce_eager)")
    opt("--stream-interval", "tokens per streamed engine output (4 = one codec frame)", type=int, metavar="N")
    g.add_argument("--no-warmup", dest="warmup", action="store_false", default=None,
                   help="skip the start-up warm-up batch (default: warm up; engine.warmup = true)")
    g.add_argument("--compile", action="store_true", default=None,
                   help="native engine: fuse the decode step with torch.compile (default: off)")
    if server:
        r = p.add_argument_group("replicas (one server, several engines)")
        r.add_argument("--data-parallel-size", type=int, metavar="N",
                       help=f"engine replicas behind one server ({_config_default('engine.data_parallel_size')})")
        r.add_argument("--gpus", metavar="IDS",
                       help="comma-separated CUDA device ids, one replica each, e.g. 0,1 "
                            f"({_config_default('engine.gpus')})")


def build_parser() -> argparse.ArgumentParser:
    """The ``kanitts`` parser (``bench`` has its own: :func:`kanitts.bench.cli.build_parser`)."""
    from kanitts.tiny import DEFAULT_VOICES

    parser = argparse.ArgumentParser(prog="kanitts", description="KaniTTS text-to-speech: server and tools")
    parser.add_argument("--version", action="version", version=f"kanitts {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the OpenAI-compatible speech server",
                           description="Run the OpenAI-compatible speech server.")
    _add_common(serve)
    serve.add_argument("--host", help=f"bind address ({_config_default('server.host')})")
    serve.add_argument("--port", type=int, help=f"port ({_config_default('server.port')})")
    serve.add_argument("--insecure", action="store_true", default=None,
                       help="allow a non-loopback --host without API keys (default: refuse to start)")
    _add_engine(serve, server=True)

    say = sub.add_parser("say", help="synthesize text to an audio file",
                         description="Synthesize text to an audio file (or stdout with -o -).")
    say.add_argument("text", help="text to speak ('-' reads stdin)")
    say.add_argument("-o", "--output", required=True, metavar="FILE",
                     help="output file, '-' for stdout; the format comes from its extension (required)")
    _add_common(say)
    say.add_argument("--voice", help="voice name (default: the language's default voice)")
    say.add_argument("--seed", type=int, help="sampling seed for reproducible output (default: random)")
    say.add_argument("--format", choices=FORMATS,
                     help="output format (default: from the extension; wav for a name without one; "
                          "an unknown extension is an error)")
    say.add_argument("--speed", type=float, default=1.0,
                     help=f"tempo {MIN_SPEED}-{MAX_SPEED}, pitch unchanged (default: 1.0)")
    say.add_argument("--max-tokens", type=int, metavar="N",
                     help=f"tokens per chunk, 50 = 1 s ({_config_default('generation.max_tokens')})")
    _add_engine(say, server=False)

    tiny = sub.add_parser("make-tiny", help="write random-weight checkpoints in the real formats (tests)",
                          description="Write random-weight checkpoints in the real formats (tests, benchmarks).")
    tiny.add_argument("dir", help="output folder: DIR/model/ and DIR/codec.nemo")
    tiny.add_argument("--voices", default=None,
                      help="comma-separated speakers (default: "
                           + "; ".join(f"{k}: {','.join(v)}" for k, v in DEFAULT_VOICES.items())
                           + "; other languages as es)")
    tiny.add_argument("--language", default="en", help="language recorded in config.json (default: en)")
    tiny.add_argument("--full-size", action="store_true",
                      help="real model and codec sizes, for benchmarks (default: off, tiny sizes)")
    tiny.add_argument("--seed", type=int, default=0, help="random seed of the weights (default: 0)")
    tiny.add_argument("--kanitts2", action="store_true",
                      help="a KaniTTS-2 model (speaker row, frame-level positions, learnable RoPE, language "
                           "tags) plus a speaker encoder in DIR/speaker/ (default: off, a v1 model)")

    bench = sub.add_parser("bench", help="measure speed (see BENCHMARKS.md; kanitts bench --help)",
                           add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER, help="kanitts bench options")

    cfg = sub.add_parser("config", help="configuration tools", description="Configuration tools.")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    show = cfg_sub.add_parser("show", help="print the effective configuration and where each value came from",
                              description="Print the effective configuration and where each value came from.")
    _add_common(show)
    show.add_argument("--host", help=f"bind address ({_config_default('server.host')})")
    show.add_argument("--port", type=int, help=f"port ({_config_default('server.port')})")
    show.add_argument("--json", action="store_true", help="machine-readable output (default: off, a table)")
    #: each subcommand's own parser, for errors that should show its usage line
    parser.subcommands = {"serve": serve, "say": say, "make-tiny": tiny, "config": show}  # type: ignore[attr-defined]
    return parser


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Turn flags into a nested settings dict (unset flags are None and dropped later)."""
    g = lambda name: getattr(args, name, None)  # noqa: E731
    out: dict[str, Any] = {
        "codec": {"model": g("codec")},
        "voices": {"speaker_encoder": g("speaker_encoder")},
        "engine": {
            "backend": g("backend"),
            "device": g("device"),
            "mode": g("mode"),
            "gpu_memory_utilization": g("gpu_memory_utilization"),
            "kv_cache_memory_bytes": g("kv_cache_memory_bytes"),
            "max_model_len": g("max_model_len"),
            "max_num_seqs": g("max_num_seqs"),
            "max_num_batched_tokens": g("max_num_batched_tokens"),
            "tensor_parallel_size": g("tensor_parallel_size"),
            "data_parallel_size": g("data_parallel_size"),
            "gpus": g("gpus"),
            "quantization": g("quantization"),
            "enforce_eager": g("enforce_eager"),
            "stream_interval": g("stream_interval"),
            "warmup": g("warmup"),
            "compile": g("compile"),
        },
        "server": {"host": g("host"), "port": g("port"), "insecure": g("insecure")},
    }
    if g("model"):
        lang = g("language")
        out["multi_language"] = False
        out["_single_model"] = (lang, g("model"))
    return out


def settings_from_args(args: argparse.Namespace) -> Any:
    from kanitts.config import ConfigError, LanguageConfig, load_settings

    cli = cli_overrides(args)
    single = cli.pop("_single_model", None)
    settings = load_settings(getattr(args, "config", None), cli)
    language = getattr(args, "language", None)
    if single is None and language and language != settings.default_language:
        if language not in settings.languages:
            raise ConfigError(
                f"--language {language}: no model is configured for {language!r} (configured: "
                f"{', '.join(sorted(settings.languages))}); pass --model ID_OR_DIR to speak "
                f"{language!r} with a model of your own"
            )
        settings.default_language = language
    if single is not None:
        lang, model = single
        lang = lang or settings.default_language
        existing = settings.languages.get(lang)
        # A model given on the command line brings its own voices (speaker_settings).
        langs = dict(settings.languages)
        langs[lang] = LanguageConfig(
            model=model, voices=None, default_voice=None,
            template=existing.template if existing else None,
        )
        settings = settings.model_copy(update={"languages": langs, "default_language": lang,
                                               "multi_language": False})
    return settings


def _setup_logging(verbose: bool, default: int) -> None:
    level = logging.DEBUG if verbose else default
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        from kanitts.bench.cli import main as bench_main

        return int(bench_main(argv[1:]) or 0)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the subcommand's parser, so its usage line is the one shown
        parser.subcommands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    from kanitts.config import ConfigError
    from kanitts.hub import ModelLoadError

    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "say":
            return _say(args)
        if args.command == "make-tiny":
            return _make_tiny(args)
        if args.command == "config":
            return _config_show(args)
    except (ConfigError, ModelLoadError) as exc:
        print(f"kanitts: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return EXIT_ERROR


def _make_tiny(args: argparse.Namespace) -> int:
    _setup_logging(False, logging.WARNING)
    from kanitts.tiny import make_tiny

    if args.kanitts2:
        from kanitts.tiny_kanitts2 import make_tiny_kanitts2

        model_dir, codec, speaker = make_tiny_kanitts2(args.dir, language=args.language,
                                                       full_size=args.full_size, seed=args.seed)
        print(f"model: {model_dir}\ncodec: {codec}\nspeaker encoder: {speaker}")
        return 0
    voices = [v.strip() for v in args.voices.split(",") if v.strip()] if args.voices else None
    model_dir, codec = make_tiny(args.dir, voices=voices, language=args.language,
                                 full_size=args.full_size, seed=args.seed)
    print(f"model: {model_dir}\ncodec: {codec}")
    return 0


def _config_show(args: argparse.Namespace) -> int:
    from kanitts.config import explain_settings

    settings = settings_from_args(args)
    cli = cli_overrides(args)
    if args.language:
        cli["default_language"] = args.language
    if cli.pop("_single_model", None) is not None:
        cli.setdefault("languages", {})[settings.default_language] = {"model": args.model}
    rows = explain_settings(args.config, cli, settings=settings)
    from kanitts.engine.factory import backend_kind, mode_values

    preset = {f"engine.{k}": v for k, v in mode_values(settings).items()}
    mode = settings.engine.mode
    rows = [(k, preset[k], f"mode:{mode}") if k in preset else (k, v, s) for k, v, s in rows]
    if args.json:
        print(json.dumps([{"key": k, "value": v, "source": s} for k, v, s in rows], indent=2))
        return 0
    width = max(len(k) for k, _, _ in rows)
    for key, value, source in rows:
        print(f"{key:<{width}} = {json.dumps(value)}    # {source}")
    if backend_kind(settings) == "native":
        for line in _native_mode_notes(mode):
            print(f"# {line}")
    return 0


def _native_mode_notes(mode: str) -> list[str]:
    """What ``mode`` sets for the native engine beyond the ``engine.*`` keys (its options and,
    on CUDA, its process environment), one line each, for ``kanitts config show``."""
    import os

    from kanitts.engine.modes import NATIVE_MODE_ENV, NATIVE_MODE_OPTIONS

    lines = []
    if NATIVE_MODE_OPTIONS.get(mode, {}).get("single_span"):
        lines.append(f"engine.mode {mode}: decode steps attend over all engine.max_model_len positions "
                     "(on CUDA: one decode graph per batch bucket, not per bucket x span)")
    env = NATIVE_MODE_ENV.get(mode, {})
    if env:
        given = " ".join(f"{k}={v}" + (f" (yours wins: {os.environ[k]})" if k in os.environ else "")
                         for k, v in env.items())
        lines.append(f"engine.mode {mode}, on CUDA: process environment {given}")
    return lines


def _say(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose, logging.WARNING)
    settings = settings_from_args(args)
    if args.max_tokens is not None:
        settings.generation.max_tokens = args.max_tokens
    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip():
        print("kanitts: error: nothing to say (empty text)", file=sys.stderr)
        return EXIT_ERROR
    if not MIN_SPEED <= args.speed <= MAX_SPEED:
        print(f"kanitts: error: --speed must be between {MIN_SPEED} and {MAX_SPEED}", file=sys.stderr)
        return EXIT_ERROR
    out = None if args.output == "-" else Path(args.output)
    named = format_for_suffix(out.suffix, default="") if out is not None and out.suffix else "wav"
    if not (args.format or named):
        known = ", ".join(sorted({".ogg", ".raw", *(f".{f}" for f in FORMATS)}))
        print(f"kanitts: error: cannot tell the audio format from {out.suffix!r} ({known}); "
              "name the file accordingly or pass --format", file=sys.stderr)
        return EXIT_ERROR
    fmt = args.format or named
    from kanitts.preflight import check_start
    from kanitts.server.schemas import SpeechRequest

    check_start(settings)

    # The flags are checked above and by argparse; --seed keeps the CLI's range (any int,
    # as the engines take), so the schema's HTTP bounds are not applied here.
    request = SpeechRequest.model_construct(input=text, voice=args.voice, seed=args.seed,
                                            response_format=fmt, speed=args.speed)
    return asyncio.run(_say_async(settings, request, out))


async def _say_async(settings: Any, request: SpeechRequest, out: Path | None) -> int:
    """The server's speech operation (``Speaker.speak``), without admission or an input cap;
    the file goes to ``out`` (None: stdout), a progress bar to stderr when it is a terminal."""
    from kanitts import progress
    from kanitts.server.errors import APIError
    from kanitts.server.speech import Speaker
    from kanitts.service import TTSService

    svc = TTSService(settings)
    try:
        await svc.start()
        try:
            speech = await Speaker(svc).speak(request, "say")
            async with progress.synthesis_progress(speech.synthesis, progress.wanted()):
                audio = await speech.audio()
        except APIError as exc:
            print(f"kanitts: error: {exc.message}", file=sys.stderr)
            return EXIT_ERROR
        if out is None:
            sys.stdout.buffer.write(audio.data)
            sys.stdout.buffer.flush()
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(audio.data)
        route = speech.route
        where = out if out is not None else "stdout"
        logger.info("wrote %s (%.2f s, voice %s, language %s)", where, audio.seconds, route.voice, route.language)
        print(f"{where}: {audio.seconds:.2f} s, voice {route.voice}, language {route.language}", file=sys.stderr)
        return 0
    finally:
        await svc.close()


def _serve(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose, logging.INFO)
    import uvicorn

    from kanitts.preflight import check_start
    from kanitts.server.app import create_app
    from kanitts.server.gc_freeze import freeze_startup_objects
    from kanitts.server.shutdown import DrainingServer

    settings = settings_from_args(args)
    check_start(settings)
    host, port = settings.server.host, settings.server.port
    try:
        sock = _bind(host, port)
    except OSError as exc:
        print(f"kanitts: error: cannot listen on {host}:{port}: {exc.strerror or exc} "
              "(choose another with --port or server.port)", file=sys.stderr)
        return EXIT_ERROR
    fatal: list[str] = []
    server_box: list[uvicorn.Server] = []

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server_box:
            server_box[0].should_exit = True

    # once the models are loaded: full GC collections in a burst skip the start-up objects
    app = create_app(settings, on_fatal=on_fatal, on_ready=freeze_startup_objects)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.server.log_level,
        timeout_graceful_shutdown=int(settings.server.graceful_shutdown_seconds) or None,
        access_log=False,
    )
    server = DrainingServer(config)  # streams in flight end cleanly at shutdown
    server_box.append(server)
    logger.info("kanitts %s listening on http://%s:%d", __version__, host, sock.getsockname()[1])
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if fatal:
        print(f"kanitts: error: {fatal[0]}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv6 for a ``:`` address), as uvicorn binds
    it; raises OSError (e.g. address in use) before anything says "listening"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


if __name__ == "__main__":
    sys.exit(main())
