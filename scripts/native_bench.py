"""Device benchmark of the native engine (full-size random weights, bf16, CUDA).

Steps (any subset, in order):
  assets   build the full-size random-weight checkpoint (``kanitts.tiny.make_model``) if missing
  step     the decode step alone: CUDA-graph replay and eager ms per step at each batch size, every
           slot active, attention spans 512 and ``--max-len`` (comparable to ``lean_step.py``)
  engine   ``NativeBackend`` end to end (scheduler, sampling, host copies): start-up time, then
           N concurrent streams of ``--tokens`` tokens each: aggregate tokens/s, per-stream RTF,
           time to the first frame (TTFA at the engine) and the scheduler's host ms per step
  gil      the engine at the largest ``--batches`` beside a thread holding the GIL (a busy server
           loop's stand-in), switch interval 5 ms vs 0.5 ms: tokens/s, ms per step, TTFA
  memory   the low_vram shape (4 slots x 2,048, graphs on): GPU memory itemised (nvidia-smi + torch)
  lowvram  the whole low_vram server's GPU memory (engine + codec worker, one process), itemised
  compile  the graphed step un-fused vs fused by torch.compile (Inductor: forward, head, sampling and
           state advance in one graph), same pool, same process, every batch, span ``--max-len``:
           ms per step, ratio, set-up seconds (compile + capture), compiled graphs, graph breaks
           (``--compile-dynamic``: also compiled with dynamic sizes); ``engine --compile``: the
           engine end to end with the fused step (start-up seconds, RTF)
  prefill  admission alone (the scheduler's ``_admit``: slot reset, prefill, state writes, first
           token) from a submit-equivalent to the first tokens on the host, eager vs graphed
           (``GroupPrefill``), same pool, same process, groups of 1, 4, 16, 64 at prompts of ~20
           and ~60 rows: ms p50/min, host ms, prefill graphs captured, capture seconds, pool growth

usage: python3 scripts/native_bench.py STEP... [--assets DIR] [--batches 1,64,256,512]
       [--max-len 1024] [--tokens 500] [--json FILE] [--compile] [--compile-dynamic]
Prints one ``RESULT {json}`` line per measurement and appends them to ``--json`` (a JSON list).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from kanitts import tokens as tk
from kanitts.bench.e2e_streams import PROMPT, stream_audio_seconds

log = logging.getLogger("native_bench")


def emit(args: argparse.Namespace, row: dict[str, Any]) -> None:
    row = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
    log.info("RESULT %s", json.dumps(row))
    if args.json:
        path = Path(args.json)
        rows = json.loads(path.read_text()) if path.exists() else []
        rows.append(row)
        path.write_text(json.dumps(rows, indent=1))


def smi_used_mib() -> int:
    """GPU memory used on the card (all processes), MiB, from nvidia-smi."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True).stdout.split()
    except OSError:
        return -1
    return int(out[0]) if out else -1


def model_dir(args: argparse.Namespace) -> str:
    return str(Path(args.assets) / "model")


def codec_path(args: argparse.Namespace) -> str:
    return str(Path(args.assets) / "codec.nemo")


def step_assets(args: argparse.Namespace) -> None:
    from kanitts.bench.assets import ensure_assets

    t0 = time.perf_counter()
    ensure_assets(args.assets)  # the model and the codec (make-tiny --full-size), if missing
    log.info("full-size assets ready in %.1f s", time.perf_counter() - t0)


def _pool(args: argparse.Namespace, slots: int, max_len: int):
    from kanitts.engine.native.sampler import Sampler
    from kanitts.engine.native.slots import SlotParams, SlotPool
    from kanitts.engine.native.weights import load_lfm2

    model = load_lfm2(model_dir(args), "cuda", torch.bfloat16)
    pool = SlotPool(model, slots, max_len)
    sampler = Sampler(model, pool)
    opened = tk.with_opening(PROMPT)
    pool.admit(list(range(slots)), [SlotParams(prompt=opened, temperature=0.6, top_p=0.95, repetition_penalty=1.1,
                                               seed=i, min_tokens=10**9, constrained=True,
                                               stop_ids=tk.STOP_TOKEN_IDS) for i in range(slots)])
    # every codebook phase present, as in a real batch
    pool.tok.copy_(torch.tensor([tk.audio_token(i % 4, (7 * i) % tk.CODEBOOK_SIZE) for i in range(slots)]))
    return model, pool, sampler


def _time_replays(fn, iters: int) -> float:
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def _graphed_step(model, pool, sampler, batches: list[int], spans: list[int], compile: bool,
                  dynamic: bool | None = False):
    """A captured DecodeStep and its set-up seconds (compile + warm-up + capture)."""
    from kanitts.engine.native.graphs import DecodeStep

    t0 = time.perf_counter()
    step = DecodeStep(model, pool, sampler, graphs=True, compile=compile, dynamic=dynamic, sizes=batches,
                      spans=spans)
    saved = pool.active.clone()
    step.capture()
    pool.active.copy_(saved)
    return step, time.perf_counter() - t0


def _replay_ms(pool, step, b: int, span: int, fill: int = 400) -> float:
    """ms per replay of the (b, span) graph, ``fill`` cached positions per slot (fits every span)."""
    pool.cache_len.fill_(fill)
    pool.rope_pos.fill_(fill)
    ms = _time_replays(step.graphs[(b, span)].replay, 100)
    pool.cache_len.fill_(fill)
    return ms


def step_step(args: argparse.Namespace) -> None:
    batches = [int(b) for b in args.batches.split(",")]
    model, pool, sampler = _pool(args, max(batches), args.max_len)
    spans = [512, args.max_len]
    step, setup = _graphed_step(model, pool, sampler, batches, spans, compile=False)
    with torch.inference_mode():
        for b in batches:
            for span in spans:
                ms = _replay_ms(pool, step, b, span)
                eager = _time_replays(lambda: step.step_eager(b, span, False), 20)
                emit(args, {"step": "step", "batch": b, "attn_span": span,
                            "max_len": args.max_len, "graph_ms": ms, "eager_ms": eager,
                            "tokens_per_s": b * 1e3 / ms, "rtf_per_stream": ms * tk.TOKENS_PER_SECOND / 1e3,
                            "setup_s": setup})
    del step, pool, model
    torch.cuda.empty_cache()


def step_compile(args: argparse.Namespace) -> None:
    """The graphed step un-fused vs Inductor-fused (the whole step: forward, head, sampling,
    state advance) on one pool in the same process, span ``--max-len``, every batch. Also
    (``--compile-dynamic``) the fused step compiled with dynamic sizes (fewer compiles)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    batches = [int(b) for b in args.batches.split(",")]
    spans = [args.max_len]
    model, pool, sampler = _pool(args, max(batches), args.max_len)
    variants: list[tuple[str, bool, bool | None]] = [("graphed", False, False), ("compiled", True, False)]
    if args.compile_dynamic:
        variants.append(("compiled_dynamic", True, None))
    rows: dict[str, dict[int, float]] = {}
    for name, compile, dynamic in variants:
        torch._dynamo.reset()
        counters.clear()
        try:
            step, setup = _graphed_step(model, pool, sampler, batches, spans, compile=compile, dynamic=dynamic)
        except Exception:  # noqa: BLE001 - one failed variant must not lose the others' figures
            log.error("compile variant %s failed:\n%s", name, traceback.format_exc())
            continue
        graphs = counters["stats"]["unique_graphs"]
        breaks = sum(counters["graph_break"].values())
        rows[name] = {}
        with torch.inference_mode():
            for b in batches:
                ms = _replay_ms(pool, step, b, args.max_len)
                rows[name][b] = ms
                emit(args, {"step": "compile", "variant": name, "batch": b, "attn_span": args.max_len,
                            "max_len": args.max_len, "slots": pool.size, "graph_ms": ms,
                            "vs_graphed": ms / rows["graphed"][b] if b in rows.get("graphed", {}) else None, "tokens_per_s": b * 1e3 / ms,
                            "rtf_per_stream": ms * tk.TOKENS_PER_SECOND / 1e3, "setup_s": setup,
                            "compiled_graphs": graphs, "graph_breaks": breaks, "torch": torch.__version__})
        del step
        torch.cuda.empty_cache()
    del pool, model
    torch.cuda.empty_cache()


def step_prefill(args: argparse.Namespace) -> None:
    from kanitts.bench.native_prefill import measure_admission

    for row in measure_admission(model_dir(args), args.max_len):
        emit(args, row)
    torch.cuda.empty_cache()


async def _engine(args: argparse.Namespace) -> None:
    from kanitts.engine.base import SamplingParams
    from kanitts.engine.native.backend import NativeBackend

    batches = [int(b) for b in args.batches.split(",")]
    slots = max(batches)
    t0 = time.perf_counter()
    backend = NativeBackend(model_dir(args), device=args.device, dtype=args.dtype, max_num_seqs=slots,
                            max_model_len=args.max_len, max_prefill_tokens=16384, warmup=True,
                            compile=args.compile)
    await backend.start()
    startup = time.perf_counter() - t0
    sched = backend.scheduler
    assert sched is not None
    emit(args, {"step": "engine_start", "compile": args.compile, "slots": slots, "max_len": args.max_len,
                "startup_s": startup,
                "graphs": len(backend.scheduler.step.graphs), "capture_s": sched.step.capture_seconds,
                "prefill_graphs": len(sched.prefill.graphs) if sched.prefill else 0,
                "prefill_capture_s": sched.prefill.capture_seconds if sched.prefill else 0.0,
                "torch_reserved_mib": torch.cuda.memory_reserved() / 2**20, "smi_used_mib": smi_used_mib()})
    n_tok = args.tokens

    async def one(i: int, t_start: float) -> tuple[float, float, int]:
        first, count = -1.0, 0
        params = SamplingParams(seed=i, max_tokens=n_tok, min_tokens=n_tok)
        async for ids in backend.stream(PROMPT, params):
            if first < 0:
                first = time.perf_counter() - t_start
            count += len(ids)
        return first, time.perf_counter() - t_start, count

    for n in batches:
        reps = 3 if n == 1 else 1
        for _ in range(reps):
            steps0, host0 = sched.stats.steps, sched.stats.host_seconds
            t_start = time.perf_counter()
            res = await asyncio.gather(*(one(i, t_start) for i in range(n)))
            wall = time.perf_counter() - t_start
            firsts = sorted(r[0] for r in res)
            ends = sorted(r[1] for r in res)
            assert all(r[2] == n_tok for r in res)
            steps = sched.stats.steps - steps0
            audio_s = n_tok / tk.TOKENS_PER_SECOND
            emit(args, {"step": "engine", "compile": args.compile, "streams": n, "tokens": n_tok, "wall_s": wall,
                        "tokens_per_s": n * n_tok / wall, "rtf_p50": statistics.median(ends) / audio_s,
                        "rtf_worst": ends[-1] / audio_s, "ttfa_p50_ms": statistics.median(firsts) * 1e3,
                        "ttfa_max_ms": firsts[-1] * 1e3, "steps": steps, "ms_per_step": wall * 1e3 / max(1, steps),
                        "host_ms_per_step": (sched.stats.host_seconds - host0) * 1e3 / max(1, steps)})
    await backend.close()


async def _gil(args: argparse.Namespace) -> None:
    """The engine thread beside a thread that holds the GIL (standing in for a busy server
    event loop), at Python's default switch interval (5 ms) and at 0.5 ms: how much the
    engine's steps stretch when its host work waits for the GIL."""
    import sys
    import threading

    from kanitts.engine.base import SamplingParams
    from kanitts.engine.native.backend import NativeBackend

    n = max(int(b) for b in args.batches.split(","))
    backend = NativeBackend(model_dir(args), device=args.device, dtype=args.dtype, max_num_seqs=n,
                            max_model_len=args.max_len, max_prefill_tokens=16384, warmup=True)
    await backend.start()
    sched = backend.scheduler
    assert sched is not None
    n_tok = args.tokens

    async def one(i: int, t_start: float) -> tuple[float, float]:
        first = -1.0
        async for _ in backend.stream(PROMPT, SamplingParams(seed=i, max_tokens=n_tok, min_tokens=n_tok)):
            if first < 0:
                first = time.perf_counter() - t_start
        return first, time.perf_counter() - t_start

    for switch, busy in [(0.005, False), (0.005, True), (0.0005, True), (0.005, False)]:
        sys.setswitchinterval(switch)
        stop = threading.Event()

        def spin() -> None:
            x = 0
            while not stop.is_set():
                for _ in range(1000):
                    x += 1

        th = threading.Thread(target=spin, daemon=True)
        if busy:
            th.start()
        steps0 = sched.stats.steps
        t_start = time.perf_counter()
        res = await asyncio.gather(*(one(i, t_start) for i in range(n)))
        wall = time.perf_counter() - t_start
        stop.set()
        if busy:
            th.join()
        steps = sched.stats.steps - steps0
        emit(args, {"step": "gil", "streams": n, "tokens": n_tok, "switch_interval_s": switch, "busy_thread": busy,
                    "tokens_per_s": n * n_tok / wall, "ms_per_step": wall * 1e3 / max(1, steps),
                    "ttfa_p50_ms": statistics.median(r[0] for r in res) * 1e3,
                    "rtf_worst": max(r[1] for r in res) / (n_tok / tk.TOKENS_PER_SECOND)})
    sys.setswitchinterval(0.005)
    await backend.close()


def step_gil(args: argparse.Namespace) -> None:
    asyncio.run(_gil(args))
    torch.cuda.empty_cache()


def step_engine(args: argparse.Namespace) -> None:
    asyncio.run(_engine(args))
    torch.cuda.empty_cache()


def step_memory(args: argparse.Namespace) -> None:
    """low_vram shape; meant to run first in its own process (the context is counted)."""
    from kanitts.engine.base import SamplingParams
    from kanitts.engine.modes import DEFAULT_MAX_MODEL_LEN, MODES
    from kanitts.engine.native.backend import NativeBackend

    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    base = smi_used_mib()
    slots = int(MODES["low_vram"]["max_num_seqs"])
    backend = NativeBackend(model_dir(args), device="cuda", dtype="bfloat16", max_num_seqs=slots,
                            max_model_len=DEFAULT_MAX_MODEL_LEN, max_prefill_tokens=1024, warmup=True)

    async def go() -> None:
        await backend.start()

        async def one(i: int) -> None:
            async for _ in backend.stream(PROMPT, SamplingParams(seed=i, max_tokens=200, min_tokens=200)):
                pass

        await asyncio.gather(*(one(i) for i in range(slots)))

    asyncio.run(go())
    torch.cuda.synchronize()
    model = backend.model
    assert model is not None and backend.scheduler is not None
    pool = backend.scheduler.pool
    weights = model.nbytes()
    state = pool.cache.nbytes() + pool.seen.numel()
    m = 2**20
    emit(args, {"step": "memory", "slots": slots, "max_len": DEFAULT_MAX_MODEL_LEN, "smi_context_mib": base,
                "smi_used_mib": smi_used_mib(), "weights_mib": weights / m, "slot_state_mib": state / m,
                "torch_allocated_mib": torch.cuda.memory_allocated() / m,
                "torch_max_allocated_mib": torch.cuda.max_memory_allocated() / m,
                "torch_reserved_mib": torch.cuda.memory_reserved() / m,
                "graphs": len(backend.scheduler.step.graphs), "startup_s": backend.startup_seconds,
                "prefill_graphs": len(backend.scheduler.prefill.graphs) if backend.scheduler.prefill else 0,
                "prefill_pool_growth_mib": backend.scheduler.prefill.pool_growth_mib if backend.scheduler.prefill else 0.0})
    asyncio.run(backend.close())


def step_lowvram(args: argparse.Namespace) -> None:
    """The whole low_vram server in one process, as ``kanitts serve --mode low_vram`` builds it
    (native engine + the codec worker on the same GPU, one CUDA context), nvidia-smi after each
    part; then its slots' worth of streams, tokens -> frames -> PCM, with the peak polled.
    Meant to run in its own process on an otherwise idle GPU (the context is counted)."""
    import threading

    from kanitts.codec import CodecWorker, NanoCodec
    from kanitts.config import Settings
    from kanitts.engine.factory import build_local_backend
    from kanitts.models import codec_pool_size

    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    row: dict[str, Any] = {"step": "lowvram", "smi_context_mib": smi_used_mib()}
    settings = Settings(engine={"mode": "low_vram", "backend": "native"}, codec={"model": codec_path(args)})
    backend = build_local_backend(settings, model_dir(args))
    peak = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], smi_used_mib())
            time.sleep(0.05)

    async def go() -> None:
        await backend.start()
        torch.cuda.synchronize()
        row["smi_after_engine_mib"] = smi_used_mib()
        row["engine_torch_reserved_mib"] = torch.cuda.memory_reserved() / 2**20
        model = backend.model  # type: ignore[attr-defined]
        pool = backend.scheduler.pool  # type: ignore[attr-defined]
        state = pool.cache.nbytes() + pool.seen.numel()
        row.update(weights_mib=model.nbytes() / 2**20, slot_state_mib=state / 2**20,
                   slots=backend.max_num_seqs, max_len=backend.max_model_len,  # type: ignore[attr-defined]
                   lm_graphs=len(backend.scheduler.step.graphs))  # type: ignore[attr-defined]
        codec = NanoCodec.from_pretrained(codec_path(args), device="cuda", dtype=torch.bfloat16)
        torch.cuda.synchronize()
        row["smi_after_codec_weights_mib"] = smi_used_mib()
        c = settings.codec
        worker = CodecWorker(codec, max_streams=codec_pool_size(settings), first_chunk_frames=c.first_chunk_frames,
                             chunk_frames=c.chunk_frames, fast=c.fast, max_batch_frames=c.max_batch_frames)
        row["codec_graphs"] = await asyncio.to_thread(worker.warmup)
        row["codec_streams"] = worker.max_streams
        torch.cuda.synchronize()
        row["smi_after_codec_warm_mib"] = smi_used_mib()
        threading.Thread(target=poll, daemon=True).start()

        t0 = time.perf_counter()
        audio = await stream_audio_seconds(backend, worker, backend.max_num_seqs, args.tokens)  # type: ignore[attr-defined]
        row["streams_audio_s"] = sum(audio)
        row["streams_wall_s"] = time.perf_counter() - t0
        done.set()
        await worker.aclose()
        await backend.close()

    asyncio.run(go())
    row["smi_peak_while_streaming_mib"] = peak[0]
    row["torch_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    emit(args, row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("steps", nargs="+",
                    choices=["assets", "step", "engine", "memory", "lowvram", "compile", "gil", "prefill"])
    ap.add_argument("--assets", default="/tmp/kanitts-native")
    ap.add_argument("--batches", default="1,64,256,512")
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--json", default="")
    ap.add_argument("--device", default="cuda", help="engine step only (cpu: a smoke test)")
    ap.add_argument("--dtype", default="bfloat16", help="engine step only")
    ap.add_argument("--compile", action="store_true", help="engine step: the Inductor-fused decode step")
    ap.add_argument("--compile-dynamic", action="store_true",
                    help="compile step: also the fused step compiled with dynamic sizes")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if torch.cuda.is_available():
        log.info("device %s, torch %s", torch.cuda.get_device_name(), torch.__version__)
    for name in args.steps:
        t0 = time.perf_counter()
        try:
            {"assets": step_assets, "step": step_step, "engine": step_engine, "gil": step_gil, "memory": step_memory,
             "lowvram": step_lowvram, "compile": step_compile, "prefill": step_prefill}[name](args)
        except Exception:  # noqa: BLE001 - one failed step must not lose the others' figures
            log.error("step %s failed:\n%s", name, traceback.format_exc())
        log.info("step %s took %.1f s", name, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
