"""``kanitts`` command line: serve, say, bench, make-tiny, config show."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kanitts import __version__
from kanitts.audio import FORMATS, MAX_SPEED, MIN_SPEED, format_for_suffix
from kanitts.engine.modes import DEFAULT_MODE, MODE_NAMES

if TYPE_CHECKING:
    from kanitts.server.schemas import SpeechRequest

logger = logging.getLogger("kanitts")

EXIT_ERROR = 1


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML config file (also KANITTS_CONFIG)")
    p.add_argument("--model", metavar="ID_OR_DIR",
                   help="serve only this model (hub id or local folder) for --language")
    p.add_argument("--codec", metavar="ID_OR_PATH", help="NanoCodec .nemo (hub id, file or folder)")
    p.add_argument("--language", metavar="CODE", help="language of --model (default: default_language)")
    p.add_argument("--backend", choices=["auto", "native", "vllm", "torch"],
                   help="generation backend (default auto = native)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--mode", choices=MODE_NAMES,
                   help=f"performance mode: engine sizes (default {DEFAULT_MODE})")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _add_engine(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("vLLM engine overrides (each overrides the mode's preset)")
    g.add_argument("--gpu-memory-utilization", type=float)
    g.add_argument("--kv-cache-memory-bytes", type=int)
    g.add_argument("--max-model-len", type=int)
    g.add_argument("--max-num-seqs", type=int)
    g.add_argument("--max-num-batched-tokens", type=int)
    g.add_argument("--tensor-parallel-size", type=int)
    g.add_argument("--data-parallel-size", type=int, help="engine replicas behind one server")
    g.add_argument("--gpus", help="comma-separated GPU ids, one replica each (e.g. 0,1)")
    g.add_argument("--quantization")
    g.add_argument("--enforce-eager", action="store_true", default=None)
    g.add_argument("--stream-interval", type=int, help="tokens per streamed engine output (preset: 4 = one frame)")
    g.add_argument("--no-warmup", dest="warmup", action="store_false", default=None,
                   help="skip the start-up warm-up batch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kanitts", description="KaniTTS text-to-speech: server and tools")
    parser.add_argument("--version", action="version", version=f"kanitts {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the OpenAI-compatible speech server")
    _add_common(serve)
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 32855)")
    _add_engine(serve)

    say = sub.add_parser("say", help="synthesize text to an audio file")
    say.add_argument("text", help="text to speak ('-' reads stdin)")
    say.add_argument("-o", "--output", required=True, help="output file; format from its extension")
    _add_common(say)
    say.add_argument("--voice", help="voice name (default: the model's default voice)")
    say.add_argument("--seed", type=int, help="sampling seed for reproducible output")
    say.add_argument("--format", choices=FORMATS,
                     help="output format (default: from the extension, else wav)")
    say.add_argument("--speed", type=float, default=1.0, help=f"tempo {MIN_SPEED}-{MAX_SPEED} (pitch unchanged)")
    say.add_argument("--max-tokens", type=int, help="tokens per chunk (50 = 1 s)")
    _add_engine(say)

    tiny = sub.add_parser("make-tiny", help="write random-weight checkpoints in the real formats (tests)")
    tiny.add_argument("dir", help="output folder: DIR/model/ and DIR/codec.nemo")
    tiny.add_argument("--voices", default=None, help="comma-separated speakers (default andrew,katie)")
    tiny.add_argument("--language", default="en")
    tiny.add_argument("--full-size", action="store_true", help="real model and codec sizes (benchmarks)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--kanitts2", action="store_true",
                      help="a KaniTTS-2 model (speaker row, frame-level positions, learnable RoPE, language "
                           "tags) plus a speaker encoder in DIR/speaker/")

    bench = sub.add_parser("bench", help="measure speed (see BENCHMARKS.md)", add_help=False)
    bench.add_argument("args", nargs=argparse.REMAINDER)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    show = cfg_sub.add_parser("show", help="print the effective configuration and where each value came from")
    _add_common(show)
    show.add_argument("--host")
    show.add_argument("--port", type=int)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Turn flags into a nested settings dict (unset flags are None and dropped later)."""
    g = lambda name: getattr(args, name, None)  # noqa: E731
    out: dict[str, Any] = {
        "codec": {"model": g("codec")},
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
        },
        "server": {"host": g("host"), "port": g("port")},
    }
    if g("language"):
        out["default_language"] = g("language")
    if g("model"):
        lang = g("language")
        out["multi_language"] = False
        out["_single_model"] = (lang, g("model"))
    return out


def settings_from_args(args: argparse.Namespace) -> Any:
    from kanitts.config import LanguageConfig, load_settings

    cli = cli_overrides(args)
    single = cli.pop("_single_model", None)
    settings = load_settings(getattr(args, "config", None), cli)
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
    args = build_parser().parse_args(argv)
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
    if cli.pop("_single_model", None) is not None:
        cli.setdefault("languages", {})[settings.default_language] = {"model": args.model}
    rows = explain_settings(args.config, cli, settings=settings)
    if args.json:
        print(json.dumps([{"key": k, "value": v, "source": s} for k, v, s in rows], indent=2))
        return 0
    width = max(len(k) for k, _, _ in rows)
    for key, value, source in rows:
        print(f"{key:<{width}} = {json.dumps(value)}    # {source}")
    return 0


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
    out = Path(args.output)
    fmt = args.format or format_for_suffix(out.suffix)
    from kanitts.server.schemas import SpeechRequest

    # The flags are checked above and by argparse; --seed keeps the CLI's range (any int,
    # as the PyTorch backend takes), so the schema's HTTP bounds are not applied here.
    request = SpeechRequest.model_construct(input=text, voice=args.voice, seed=args.seed,
                                            response_format=fmt, speed=args.speed)
    return asyncio.run(_say_async(settings, request, out))


async def _say_async(settings: Any, request: SpeechRequest, out: Path) -> int:
    """The server's speech operation (``Speaker.speak``), without admission or an input cap."""
    from kanitts.server.errors import APIError
    from kanitts.server.speech import Speaker
    from kanitts.service import TTSService

    svc = TTSService(settings)
    try:
        await svc.start()
        try:
            speech = await Speaker(svc).speak(request, "say")
            audio = await speech.audio()
        except APIError as exc:
            print(f"kanitts: error: {exc.message}", file=sys.stderr)
            return EXIT_ERROR
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(audio.data)
        route = speech.route
        logger.info("wrote %s (%.2f s, voice %s, language %s)", out, audio.seconds, route.voice, route.language)
        print(f"{out}: {audio.seconds:.2f} s, voice {route.voice}, language {route.language}", file=sys.stderr)
        return 0
    finally:
        await svc.close()


def _serve(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose, logging.INFO)
    import uvicorn

    from kanitts.server.app import create_app

    settings = settings_from_args(args)
    fatal: list[str] = []
    server_box: list[uvicorn.Server] = []

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server_box:
            server_box[0].should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.server.log_level,
        timeout_graceful_shutdown=int(settings.server.graceful_shutdown_seconds) or None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    server_box.append(server)
    logger.info("kanitts %s listening on http://%s:%d", __version__, settings.server.host, settings.server.port)
    server.run()
    if fatal:
        print(f"kanitts: error: {fatal[0]}", file=sys.stderr)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
