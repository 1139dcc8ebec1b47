"""Batched streaming NanoCodec on one GPU: accuracy, throughput, latency, profile.

Run on the device machine (PYTHONPATH=src python3 scripts/codec_gpu_bench.py); writes
codec_h100.json (and prints a table) to $OUT, or to benchmarks/ when OUT is unset.
Full-size random weights (864 channels, ~31.5M decoder parameters), built in memory.
Every section runs under a wall-clock budget (BENCH_BUDGET_S, default 470 s) and in its own
try/except so one failure loses nothing else.

Runs (env):
* default: the channels-last ("nlc") walk against the current best ("ncl" opsgraph_bf16)
  in one table: accuracy, throughput of BENCH_VARIANTS in that order (default
  ``opsgraph_nlc_bf16,opsgraph_bf16,opsgraph_nlc_nopad_bf16,graph_bf16``; slower variants
  such as ``eager_bf16`` only when listed), a profile of the nlc and ncl opsgraph variants
  at b256 f8 (BENCH_PROFILE, same syntax), batch-1 latency.
* BENCH_SECOND=1: run 2 of codec_h100.txt (ncl only; the raw log is at commit 951305c).
* BENCH_FIRST=1: run 1 (whole-step torch.compile; its compile took 372 s).
* BENCH_CPU=1: a CPU dry run of the script's logic on the tiny codec.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

from kanitts.codec.fast import FastStreamingDecoder
from kanitts.codec.nanocodec import CausalConv1d, CausalConvTranspose1d, NanoCodec
from kanitts.codec.tiny import randomize_codec, tiny_codec_config

T0 = time.perf_counter()
BUDGET = float(os.environ.get("BENCH_BUDGET_S", "470"))
OUT = Path(os.environ.get("OUT") or "benchmarks")
RESULT: dict = {"sections": {}, "errors": []}
SR, SPF = 22050, 1764


def elapsed() -> float:
    return time.perf_counter() - T0


def log(*a) -> None:
    print(f"[{elapsed():6.1f}s]", *a, flush=True)


def save() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "codec_h100.json").write_text(json.dumps(RESULT, indent=1, default=str))


def section(name: str, need_s: float = 0.0):
    def deco(fn):
        def run(*a, **k):
            if elapsed() + need_s > BUDGET:
                log(f"SKIP {name}: budget")
                RESULT["errors"].append(f"{name}: skipped (budget)")
                return None
            log(f"== {name}")
            try:
                return fn(*a, **k)
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                RESULT["errors"].append(f"{name}: {type(exc).__name__}: {exc}"[:500])
                return None
            finally:
                save()

        return run

    return deco


DRY = os.environ.get("BENCH_CPU") == "1"  # CPU dry run of the script's logic (tiny codec)


def sync() -> None:
    if not DRY:
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- set-up
dev = torch.device("cpu" if DRY else "cuda")
torch.backends.cudnn.benchmark = True
# float32 means float32 (no TF32), so "fp32" rows are a true reference.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False

codec = NanoCodec(tiny_codec_config(full_size=not DRY))
randomize_codec(codec, 0)
codec = codec.to(dev).eval()
POOL = 8 if DRY else 512
RESULT["env"] = {
    "gpu": "cpu (dry run)" if DRY else torch.cuda.get_device_name(0),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "python": platform.python_version(),
    "params": sum(p.numel() for p in codec.decoder.parameters()),
    "pool_slots": POOL,
}
try:
    import triton

    RESULT["env"]["triton"] = triton.__version__
except Exception:  # noqa: BLE001
    RESULT["env"]["triton"] = None
log("env", RESULT["env"])


@section("ceilings")
def ceilings() -> None:
    if DRY:
        return
    x = torch.empty(2**28, dtype=torch.bfloat16, device=dev).uniform_()
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    sync()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(10):
        y.copy_(x)
    e1.record()
    sync()
    bw = 10 * 2 * x.numel() * 2 / (e0.elapsed_time(e1) / 1e3) / 1e12
    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync()
    e0.record()
    for _ in range(10):
        a @ b
    e1.record()
    sync()
    tf = 10 * 2 * 8192**3 / (e0.elapsed_time(e1) / 1e3) / 1e12
    RESULT["ceilings"] = {"copy_TBps_read_plus_write": round(bw, 2), "bf16_matmul_TFLOPs": round(tf, 1)}
    log(RESULT["ceilings"])
    del x, y, a, b
    torch.cuda.empty_cache()


@section("work per frame")
def work() -> None:
    """FLOPs of every conv for one frame, and the bytes of every conv's input + output
    (what an ideal one-kernel-per-conv design with fused activations moves)."""
    flops, act_elems = 0, 0
    hooks = []

    def hook(mod, inp, out):
        nonlocal flops, act_elems
        x = inp[0]
        if isinstance(mod, CausalConvTranspose1d):
            cin_g = mod.weight.shape[0] // mod.groups
            flops += 2 * out.numel() * cin_g * (mod.weight.shape[2] // mod.stride)
        else:
            flops += 2 * out.numel() * mod.weight.shape[1] * mod.weight.shape[2]
        act_elems += x.numel() + out.numel()

    for m in codec.decoder.modules():
        if isinstance(m, (CausalConv1d, CausalConvTranspose1d)):
            hooks.append(m.register_forward_hook(hook))
    frames = 8
    with torch.inference_mode():
        codec.decode(torch.randint(0, codec.codebook_size, (1, 4, frames), device=dev))
    for h in hooks:
        h.remove()
    per_frame = flops / frames
    per_s = per_frame * SR / SPF
    RESULT["work"] = {
        "gflop_per_frame": round(per_frame / 1e9, 3),
        "gflop_per_audio_s": round(per_s / 1e9, 2),
        "conv_io_mb_per_audio_s_bf16": round(act_elems / frames * 2 * SR / SPF / 1e6, 1),
        "tflops_needed_for_4000x": round(per_s * 4000 / 1e12, 1),
    }
    log(RESULT["work"])


VARIANTS = {
    # name: (dtype, compile, cuda_graphs, fused_ops, layout, pad_channels[, act_kernel])
    "eager_fp32": (torch.float32, False, False, False, "ncl", 1),
    "eager_bf16": (torch.bfloat16, False, False, False, "ncl", 1),
    "graph_bf16": (torch.bfloat16, False, True, False, "ncl", 1),
    "fast_bf16": (torch.bfloat16, not DRY, True, True, "ncl", 1),
    "opsgraph_bf16": (torch.bfloat16, "ops", True, True, "ncl", 1),
    # channels-last walk: fused bias/residual/activation kernels, no cuDNN transposes
    "opsgraph_nlc_bf16": (torch.bfloat16, "ops", True, True, "nlc", 8),
    "opsgraph_nlc_nopad_bf16": (torch.bfloat16, "ops", True, True, "nlc", 1),
    # the nlc walk with the hand-written Triton activation kernel (kanitts.codec.kernels);
    # select with BENCH_VARIANTS=opsgraph_nlc_triton_bf16,... (a 7th field = act_kernel)
    "opsgraph_nlc_triton_bf16": (torch.bfloat16, "ops", True, True, "nlc", 8, "triton"),
    # accuracy only: the nlc walk un-compiled in float32 (cuDNN channels_last convs)
    "fused_eager_nlc_fp32": (torch.float32, False, False, True, "nlc", 8),
}
POOLS: dict[str, FastStreamingDecoder] = {}


def pool(name: str) -> FastStreamingDecoder:
    if name not in POOLS:
        dtype, comp, graphs, fused, layout, pad, *rest = VARIANTS[name]
        POOLS[name] = FastStreamingDecoder(
            codec,
            POOL,
            dtype=dtype,
            compile=comp,
            cuda_graphs=graphs,
            fused_ops=fused,
            layout=layout,
            pad_channels=pad,
            act_kernel=rest[0] if rest else "compile",
        )
        log(name, "pool", POOLS[name].stats())
    return POOLS[name]


def stream_decode(p: FastStreamingDecoder, codes: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    k = codes.shape[0]
    slots = list(range(3, 3 + k))
    p.reset(slots)
    outs, t = [], 0
    for n in chunks:
        outs.append(p.step_slots(slots, codes[..., t : t + n]))
        t += n
    sync()
    return torch.cat(outs, -1).float()


def graphs_compiled() -> int:
    """Graphs dynamo compiled in this process so far (recompiles included)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@section("accuracy")
def accuracy() -> None:
    gen = torch.Generator(device=dev).manual_seed(1234)
    codes = torch.randint(0, codec.codebook_size, (4, 4, 16), device=dev, generator=gen)
    with torch.inference_mode():
        ref = codec.decode(codes).float()  # fp32 one-shot, no TF32
        ref64 = None
    acc = {}
    chunks = [2, 8, 6]  # 6 -> 4 + 2 on the graphed path
    for name in ACC_VARIANTS:
        try:
            t = time.perf_counter()
            if name == "fused_eager_fp32":
                p = FastStreamingDecoder(codec, 8, compile=False, cuda_graphs=False, fused_ops=True)
            elif name == "fused_eager_nlc_fp32":
                p = FastStreamingDecoder(codec, 8, compile=False, cuda_graphs=False, layout="nlc")
            else:
                p = pool(name)
            out = stream_decode(p, codes, chunks)
            d = (out - ref).abs()
            acc[name] = {
                "max_abs": float(d.max()),
                "rel_l2": float((out - ref).norm() / ref.norm()),
                "finite": bool(torch.isfinite(out).all()),
                "first_call_s": round(time.perf_counter() - t, 1),
                "dynamo_graphs_so_far": graphs_compiled(),
            }
            log(name, acc[name])
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            acc[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        RESULT["accuracy"] = acc
        save()
    acc["_ref"] = {"rms": float(ref.pow(2).mean().sqrt()), "frames": 16, "streams": 4, "chunks": chunks}
    del ref64


def throughput(name: str, batch: int, frames: int, min_time: float = 0.4, max_iter: int = 40) -> dict:
    p = pool(name)
    gen = torch.Generator(device=dev).manual_seed(batch * 100 + frames)
    sets = [torch.randint(0, codec.codebook_size, (batch, 4, frames), device=dev, generator=gen) for _ in range(3)]
    slots = list(range(batch))
    p.reset(slots)
    t = time.perf_counter()
    p.step_slots(slots, sets[0])  # first call: capture/compile/autotune
    sync()
    first = time.perf_counter() - t
    p.step_slots(slots, sets[1])
    sync()
    times = []
    t_all = time.perf_counter()
    i = 0
    while i < max_iter and (time.perf_counter() - t_all < min_time or i < 3):
        t = time.perf_counter()
        p.step_slots(slots, sets[i % 3])
        sync()
        times.append(time.perf_counter() - t)
        i += 1
    med = statistics.median(times)
    audio_s = batch * frames * SPF / SR
    return {
        "audio_s_per_s": round(audio_s / med, 1),
        "step_ms": round(med * 1e3, 3),
        "iters": len(times),
        "first_call_s": round(first, 2),
    }


THR: dict = {}
RESULT["throughput"] = THR


def run_grid(name: str, batches, frame_list, need: float) -> None:
    @section(f"throughput {name}", need)
    def go() -> None:
        for frames in frame_list:
            for b in batches:
                if elapsed() > BUDGET - 20:
                    log("budget: stop grid")
                    return
                try:
                    r = throughput(name, b, frames)
                except Exception as exc:  # noqa: BLE001
                    traceback.print_exc()
                    r = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                    torch.cuda.empty_cache()
                THR.setdefault(name, {})[f"b{b}_f{frames}"] = r
                log(name, b, frames, r)
                save()

    go()


@section("latency", 20)
def latency() -> None:
    lat = {}
    for name in ["opsgraph_nlc_bf16", "opsgraph_bf16", "fast_bf16", "graph_bf16", "eager_bf16"]:
        p = POOLS.get(name)
        if p is None:
            continue
        for frames in (2, 4, 1):  # 1 frame last: it may need its own compile
            if elapsed() > BUDGET - 15:
                break
            try:
                codes = torch.randint(0, codec.codebook_size, (1, 4, frames), device="cpu")
                p.reset([0])
                for _ in range(3):
                    p.step_slots([0], codes)
                sync()
                ts = []
                for _ in range(30):
                    t = time.perf_counter()
                    with p.stream_context():
                        p.step_slots([0], codes).float().cpu()  # codes from host, audio to host
                    ts.append(time.perf_counter() - t)
                ts.sort()
                lat[f"{name}_f{frames}"] = {"p50_ms": round(ts[15] * 1e3, 3), "p90_ms": round(ts[27] * 1e3, 3)}
                log(name, frames, lat[f"{name}_f{frames}"])
            except Exception as exc:  # noqa: BLE001
                traceback.print_exc()
                lat[f"{name}_f{frames}"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            RESULT["latency_batch1"] = lat
            save()


def categorize(name: str) -> str:
    n = name.lower()
    if "memcpy" in n or "memset" in n:
        return "memcpy/memset"
    if "nchwtonhwc" in n or "nhwctonchw" in n:
        return "layout transpose (cuDNN)"
    if any(s in n for s in ("conv", "cudnn", "xmma", "gemm", "implicit", "cutlass", "sm90", "winograd", "fft")):
        return "conv (cuDNN)"
    if n.startswith("triton") or "triton" in n:
        return "fused pointwise (Triton)"
    if any(s in n for s in ("index", "gather", "scatter", "cat", "copy")):
        return "gather/scatter/copy"
    return "other elementwise"


@section("profile", 25)
def profile(names: list[str] | None = None) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    out = RESULT.setdefault("profile_b256_f8", {})
    for name in names or ["opsgraph_bf16", "fast_bf16", "eager_bf16"]:
        p = POOLS.get(name)
        if p is None:
            continue
        if elapsed() > BUDGET - 10:
            log("budget: stop profiles")
            break
        batch, frames = (4, 2) if DRY else (256, 8)
        codes = torch.randint(0, codec.codebook_size, (batch, 4, frames), device=dev)
        index = torch.arange(batch, device=dev)
        with torch.inference_mode(), p.stream_context():
            p._fn(codes, index, p.states)  # un-graphed, so kernels are visible
            sync()
            with prof(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as pr:
                for _ in range(2):
                    p._fn(codes, index, p.states)
                sync()
        rows = []
        for e in pr.key_averages():
            dt = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
            if dt and e.device_type == torch.autograd.DeviceType.CUDA:
                rows.append((e.key, dt / 2, e.count // 2))
        total = sum(r[1] for r in rows) or 1.0
        cats: dict[str, float] = {}
        for k, t, _ in rows:
            cats[categorize(k)] = cats.get(categorize(k), 0) + t
        rows.sort(key=lambda r: -r[1])
        out[name] = {
            "gpu_ms_per_step": round(total / 1e3, 2),
            "categories_pct": {k: round(100 * v / total, 1) for k, v in sorted(cats.items(), key=lambda x: -x[1])},
            "top_kernels": [
                {"name": k[:110], "ms": round(t / 1e3, 3), "calls": c, "pct": round(100 * t / total, 1)}
                for k, t, c in rows[:15]
            ],
        }
        log(name, "profile", json.dumps(out[name], indent=1))
        RESULT["profile_b256_f8"] = out
        save()


def table() -> None:
    lines = []
    lines.append(f"device {RESULT['env'].get('gpu')} torch {RESULT['env'].get('torch')}  ceilings {RESULT.get('ceilings')}")
    lines.append(f"work {RESULT.get('work')}")
    lines.append("accuracy vs fp32 one-shot (16 frames x 4 streams, chunks 2+8+6):")
    for k, v in RESULT.get("accuracy", {}).items():
        lines.append(f"  {k:24s} {v}")
    keys = sorted({k for v in THR.values() for k in v}, key=lambda s: (int(s.split('_f')[1]), int(s[1:].split('_')[0])))
    lines.append("audio seconds per second (median step; step ms in brackets):")
    lines.append("  " + "variant".ljust(24) + "".join(k.rjust(20) for k in keys))
    for name, row in THR.items():
        cells = []
        for k in keys:
            r = row.get(k)
            if not r:
                cells.append("-".rjust(20))
            elif "error" in r:
                cells.append("ERR".rjust(20))
            else:
                cells.append(f"{r['audio_s_per_s']:.0f} ({r['step_ms']:.1f})".rjust(20))
        lines.append("  " + name.ljust(24) + "".join(cells))
    lines.append("batch-1 latency (codes from host, audio to host):")
    for k, v in RESULT.get("latency_batch1", {}).items():
        lines.append(f"  {k:18s} {v}")
    for name, p in RESULT.get("profile_b256_f8", {}).items():
        lines.append(f"profile {name} b256 f8: {p['gpu_ms_per_step']} ms GPU/step; {p['categories_pct']}")
        for r in p["top_kernels"][:8]:
            lines.append(f"    {r['pct']:5.1f}% {r['ms']:8.3f} ms x{r['calls']:4d} {r['name']}")
    lines.append(f"errors: {RESULT['errors']}")
    lines.append(f"total wall {elapsed():.0f}s")
    txt = "\n".join(lines)
    print("\n" + txt)
    (OUT / "codec_h100.txt").write_text(txt + "\n")


def env_list(key: str, default: str) -> list[str]:
    names = [n.strip() for n in os.environ.get(key, default).split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"{key}: unknown variants {unknown}; known: {sorted(VARIANTS)}")
    return names


MODE = "second" if os.environ.get("BENCH_SECOND") == "1" else "first" if os.environ.get("BENCH_FIRST") == "1" else "nlc"
ACC_VARIANTS = ["eager_fp32", "eager_bf16", "graph_bf16", "fast_bf16", "fused_eager_fp32"]
if MODE == "second":  # run 2: no whole-step compile (took 372 s in run 1)
    ACC_VARIANTS = ["eager_fp32", "opsgraph_bf16", "fused_eager_fp32"]
if MODE == "nlc":
    # Throughput variants, fastest-expected first (slower, already measured ones last).
    THR_VARIANTS = env_list("BENCH_VARIANTS", "opsgraph_nlc_triton_bf16,opsgraph_nlc_bf16,opsgraph_bf16,graph_bf16")
    PROFILE_VARIANTS = env_list("BENCH_PROFILE", "opsgraph_nlc_triton_bf16,opsgraph_nlc_bf16")
    ACC_VARIANTS = ["eager_fp32", "fused_eager_nlc_fp32", "fused_eager_fp32"] + [
        n for n in THR_VARIANTS if n not in ("eager_fp32", "graph_bf16", "eager_bf16")
    ]

if __name__ == "__main__" and MODE == "nlc":
    ceilings()
    work()
    accuracy()
    grid_batches = [1, 2, 4] if DRY else [1, 16, 64, 256, 512]
    for i, name in enumerate(THR_VARIANTS):
        slow = name in ("eager_bf16", "eager_fp32")
        run_grid(name, grid_batches[:4] if slow else grid_batches, [8] if slow else [8, 2], 20 if slow else 30)
        if i == min(2, len(THR_VARIANTS) - 1):  # after the main variants, before slower ones
            profile(PROFILE_VARIANTS)
    latency()
    RESULT["total_wall_s"] = round(elapsed(), 1)
    save()
    table()
    sys.exit(0)

if __name__ == "__main__" and os.environ.get("BENCH_SECOND") == "1":
    ceilings()
    work()
    accuracy()
    run_grid("opsgraph_bf16", [1, 16, 64, 256, 512], [8, 2], 30)
    run_grid("graph_bf16", [1, 16, 64, 256, 512], [8, 2], 20)
    profile(["opsgraph_bf16"])
    run_grid("eager_bf16", [1, 64, 256], [8], 15)
    latency()
    RESULT["total_wall_s"] = round(elapsed(), 1)
    save()
    table()
    sys.exit(0)

if __name__ == "__main__":
    ceilings()
    work()
    accuracy()
    big = [2, 4] if DRY else [16, 64, 256, 512]
    run_grid("fast_bf16", [1] + big, [8, 2], 60)
    profile()
    run_grid("graph_bf16", [1] + big, [8, 2], 30)
    run_grid("eager_bf16", [1] + big[:3], [8, 2], 20)
    latency()
    run_grid("eager_fp32", [1] + big[:3], [8], 15)
    RESULT["total_wall_s"] = round(elapsed(), 1)
    save()
    table()
    sys.exit(0)
