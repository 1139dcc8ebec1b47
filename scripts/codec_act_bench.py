"""Micro-benchmark of the nlc codec walk's fused residual-add + half-snake + context-cat kernels.

Why: on the H100 (batch 256, 8 frames) the Inductor kernels fast.py compiles for these
patterns are 61% of the codec step at ~3-4x their DRAM floor. This times, on the shapes of
the three largest stages, each implementation against a plain ``copy_`` measured in the
same run, and checks its error against a float64 reference, to tell where the time goes
(``sin``? indexing? the two-kernel split?) and what the hand-written Triton kernel
(src/kanitts/codec/kernels.py) gains.

Patterns (fast.py's functions; ``y, h, total: [B, T, C]``, ``ctx: [B, L, C]``):
  add_act_cat  ``y' = y + (h + b)`` and ``cat([ctx, act(y')], T)`` (two outputs);
  act_cat      ``cat([ctx, act(x + b)], T)``;
  sum_act_cat  ``cat([ctx, act((total + (y + (h + b))) / 3)], T)``;
  add          ``total + (y + (h + b))``.
Variants:
  compile          the function fast.py compiles today (imported, compiled like fast.py);
  compile_nosin    the same code with snake ``x + sin(a x)^2 / a`` replaced by ``x + a x^2``
                   (add_act_cat only): what ``sin`` costs in Inductor's kernel;
  triton_<mode>    kernels.pointwise with sin mode accurate / approx / approx_sin / none;
  triton_approx_b<elements>_w<warps>  tile sweep of the approx kernel (add_act_cat).
Shapes (batch 256, 8 frames): [256, 14112, 32] L=50, [256, 7056, 56] L=30,
[256, 2352, 112] L=10, bf16.

Run on the GPU machine: ``PYTHONPATH=src OUT=$OUT python3 scripts/codec_act_bench.py``
(< 3 min on an H100); prints a table and writes ``$OUT/codec_act_bench.json``.
``ACT_BENCH_CPU=1``: a CPU dry run of the logic on tiny shapes (compiled variants through
Inductor's CPU backend, Triton variants skipped unless ``TRITON_INTERPRET=1`` and Triton is
importable, then they run in Triton's interpreter; timings meaningless).
Env: ``ACT_BENCH_BUDGET_S`` (default 170) wall budget; ``ACT_BENCH_COMPILE=0`` runs the
"compile" variants eagerly (CPU tests, to skip Inductor's C++ compiles).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kanitts.codec import kernels
from kanitts.codec import walk_nlc as fast

T0 = time.perf_counter()
CPU = os.environ.get("ACT_BENCH_CPU") == "1"
BUDGET = float(os.environ.get("ACT_BENCH_BUDGET_S", "170"))
COMPILE = os.environ.get("ACT_BENCH_COMPILE", "1") != "0"
OUT = Path(os.environ.get("OUT") or "benchmarks")
DEV = torch.device("cpu" if CPU else "cuda")
DT = torch.bfloat16
INTERPRET = kernels._interpreted()
TRITON_OK = kernels.triton is not None and (INTERPRET if CPU else torch.cuda.is_available())
SIN_MODES = ["accurate", "approx", "approx_sin", "none"]
#: (name, B, T, C, L): the three largest stages at batch 256 x 8 frames (context = the
#: longest dilated conv's of the stage's chains: (11-1)*5, (7-1)*5, (11-1)*1).
SHAPES = (
    [("c32", 2, 24, 32, 10), ("c56", 2, 12, 56, 6), ("c112", 2, 8, 112, 2)]
    if CPU
    else [("c32", 256, 8 * 1764, 32, 50), ("c56", 256, 8 * 882, 56, 30), ("c112", 256, 8 * 294, 112, 10)]
)
ACC_BATCH = 2 if CPU else 4  # accuracy runs on a small batch of the same T, C, L
TILES = [(1024, 4), (2048, 4), (4096, 4), (4096, 8), (8192, 8)]
RESULT: dict[str, Any] = {"results": [], "accuracy": [], "notes": [], "errors": []}


def elapsed() -> float:
    return time.perf_counter() - T0


def log(*a: object) -> None:
    print(f"[{elapsed():6.1f}s]", *a, flush=True)


def save() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "codec_act_bench.json").write_text(json.dumps(RESULT, indent=1, default=str))


def sync() -> None:
    if not CPU:
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- inputs
class Case:
    """Inputs of one shape: activations bf16 with x ~ N(0, 3); per-channel alpha ~ U(0.3, 3)
    on the first C/2 (snake) channels, leaky ReLU on the rest, as in NanoCodec."""

    def __init__(self, name: str, b: int, t: int, c: int, length: int, seed: int) -> None:
        g = torch.Generator(device=DEV).manual_seed(seed)
        self.name, self.b, self.t, self.c, self.length = name, b, t, c, length

        def rnd(*shape: int, std: float = 3.0) -> torch.Tensor:
            return (torch.randn(*shape, device=DEV, generator=g) * std).to(DT)

        self.y, self.h, self.total = rnd(b, t, c), rnd(b, t, c), rnd(b, t, c)
        self.ctx = rnd(b, length, c)
        self.bias = torch.randn(c, device=DEV, generator=g) * 0.1
        n = c // 2
        alpha = torch.rand(n, device=DEV, generator=g) * 2.7 + 0.3
        self.a = torch.ones(c, device=DEV)
        self.a[:n] = alpha
        self.inv = (self.a + 1e-9).reciprocal()
        self.m = torch.zeros(c, dtype=torch.bool, device=DEV)
        self.m[:n] = True
        self.params = kernels.act_params(self.a, self.inv, self.m)

    def act_args(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
        return self.a, self.inv, self.m, False

    def bytes(self, pattern: str) -> int:
        """Bytes a pattern must move (each input read once, each output written once)."""
        e = torch.finfo(DT).bits // 8
        btc, blc = self.b * self.t * self.c, self.b * self.length * self.c
        full = btc + blc
        moved = {
            "add_act_cat": 2 * btc + blc + btc + full,
            "act_cat": btc + blc + full,
            "sum_act_cat": 3 * btc + blc + full,
            "add": 3 * btc + btc,
        }[pattern]
        return moved * e


# ----------------------------------------------------------------------------- variants
def _act_nosin(xf: torch.Tensor, a: torch.Tensor, inv: torch.Tensor, m: torch.Tensor, elu: bool) -> torch.Tensor:
    """fast._nlc_act with the snake's ``sin`` term replaced by ``a x^2`` (``x + a x x``)."""
    return torch.where(m, xf + a * xf * xf, F.leaky_relu(xf, fast.LRELU_SLOPE))


def _nosin(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a fast.py nlc function) with the same code but ``_act_nosin`` as its
    activation: its bytecode under globals where ``_nlc_act`` is rebound, so nothing else
    differs. The code object is a copy (``replace``): dynamo caches compiled entries per
    code object, and sharing fast.py's would mix the two functions' caches."""
    glb = dict(fn.__globals__)
    glb["_nlc_act"] = _act_nosin
    code = fn.__code__.replace(co_name=fn.__name__ + "_nosin")
    out = types.FunctionType(code, glb, fn.__name__ + "_nosin", fn.__defaults__, fn.__closure__)
    out.__kwdefaults__ = fn.__kwdefaults__
    return out


_COMPILED: dict[str, fast.Pointwise] = {}


def compiled(name: str) -> fast.Pointwise:
    """fast.py's function ``name`` wrapped exactly as FastStreamingDecoder wraps it under
    ``compile="ops"`` (C static, B/T dynamic); one wrapper per function, as in fast.py."""
    if name not in _COMPILED:
        n_act = {"nlc_act_cat": 2, "nlc_add_act_cat": 3, "nlc_add": 3, "nlc_sum_act_cat": 4}
        base = name.removesuffix("_nosin")
        fn = getattr(fast, base)
        if name.endswith("_nosin"):
            fn = _nosin(fn)
        _COMPILED[name] = fast.Pointwise(fn, n_act[base], COMPILE)
    return _COMPILED[name]


def call(pattern: str, variant: str, k: Case) -> Callable[[], Any]:
    """A zero-argument closure running ``variant`` of ``pattern`` on ``k``'s inputs."""
    if variant.startswith("compile"):
        suffix = "_nosin" if variant == "compile_nosin" else ""
        f = compiled(f"nlc_{pattern}{suffix}")
        args = {
            "add_act_cat": (k.y, k.h, k.ctx, k.bias, *k.act_args()),
            "act_cat": (k.h, k.ctx, k.bias, *k.act_args()),
            "sum_act_cat": (k.total, k.y, k.h, k.ctx, k.bias, *k.act_args(), 3),
            "add": (k.total, k.y, k.h, k.bias),
        }[pattern]
        return lambda: f(*args)
    parts = variant.split("_")  # triton_<mode>[_b<block>_w<warps>]
    mode = "approx_sin" if variant.startswith("triton_approx_sin") else parts[1]
    kw: dict[str, Any] = {"sin_mode": mode}
    for p in parts[2:]:
        if p.startswith("b") and p[1:].isdigit():
            kw["block"] = int(p[1:])
        if p.startswith("w") and p[1:].isdigit():
            kw["num_warps"] = int(p[1:])
    fn = {
        "add_act_cat": lambda: kernels.add_act_cat(k.y, k.h, k.ctx, k.bias, k.params, **kw),
        "act_cat": lambda: kernels.act_cat(k.h, k.ctx, k.bias, k.params, **kw),
        "sum_act_cat": lambda: kernels.sum_act_cat(k.total, k.y, k.h, k.ctx, k.bias, k.params, 3, **kw),
        "add": lambda: kernels.add(k.total, k.y, k.h, k.bias, **kw),
    }[pattern]
    return fn


def outputs(res: Any) -> list[torch.Tensor]:
    return list(res) if isinstance(res, tuple) else [res]


# ----------------------------------------------------------------------------- reference
def reference(pattern: str, k: Case, sin: bool = True) -> list[torch.Tensor]:
    """float64 outputs of ``pattern`` from the same bf16 inputs (``sin=False``: the
    ``x + a x^2`` snake of compile_nosin)."""
    y, h, tot, ctx = (t.double() for t in (k.y, k.h, k.total, k.ctx))
    b, a, m = k.bias.double(), k.a.double(), k.m
    inv = 1.0 / (a + 1e-9)

    def act(v: torch.Tensor) -> torch.Tensor:
        snake = v + inv * torch.sin(a * v) ** 2 if sin else v + a * v * v
        return torch.where(m, snake, F.leaky_relu(v, fast.LRELU_SLOPE))

    if pattern == "add_act_cat":
        z = y + (h + b)
        return [z, torch.cat([ctx, act(z)], 1)]
    if pattern == "act_cat":
        return [torch.cat([ctx, act(h + b)], 1)]
    if pattern == "sum_act_cat":
        return [torch.cat([ctx, act((tot + (y + (h + b))) / 3)], 1)]
    return [tot + (y + (h + b))]


def bf16_ulp(v: torch.Tensor) -> torch.Tensor:
    """bf16's spacing at ``|v|`` (8 significant bits), floored at 2^-14 so that values
    near zero do not report huge relative errors for absolutely tiny ones."""
    mag = v.abs().clamp_min(2.0**-14)
    return torch.exp2(torch.floor(torch.log2(mag)) - 7)


def error(got: list[torch.Tensor], ref: list[torch.Tensor]) -> dict[str, float]:
    """Worst error over the outputs: absolute, in bf16 ulps of the reference (a correctly
    rounded result has <= 0.5), and the share of elements that differ from the
    correctly rounded bf16 value of the float64 reference."""
    max_abs = max_ulp = 0.0
    ne = n = 0
    for g, r in zip(got, ref):
        d = (g.double() - r).abs()
        max_abs = max(max_abs, float(d.max()))
        max_ulp = max(max_ulp, float((d / bf16_ulp(r)).max()))
        ne += int((g != r.to(g.dtype)).sum())
        n += g.numel()
    return {"max_abs": max_abs, "max_bf16_ulp": round(max_ulp, 3), "frac_not_rounded": round(ne / max(n, 1), 6)}


# ----------------------------------------------------------------------------- timing
def timeit(fn: Callable[[], Any], min_s: float = 0.15, max_reps: int = 200) -> float:
    """Median-free mean ms per call over enough reps (CUDA events on the GPU)."""
    for _ in range(3):
        fn()
    sync()
    t = time.perf_counter()
    fn()
    sync()
    est = max(time.perf_counter() - t, 1e-6)
    reps = int(max(5, min(max_reps, min_s / est)))
    if CPU:
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t) * 1e3 / reps
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def copy_bandwidth() -> float:
    """Plain ``copy_`` of a large bf16 tensor: GB/s counting read + write."""
    n = 2**16 if CPU else 2**28
    src = torch.empty(n, dtype=DT, device=DEV).uniform_()
    dst = torch.empty_like(src)
    ms = timeit(lambda: dst.copy_(src))
    return 2 * n * src.element_size() / ms / 1e6


def graph_check(shape: tuple[str, int, int, int, int]) -> dict[str, Any]:
    """The Triton kernels under CUDA graph capture: capture add_act_cat and sum_act_cat on
    static inputs, refill the inputs, replay, and compare with an eager call."""
    if CPU or not TRITON_OK:
        return {"skipped": "needs CUDA and Triton"}
    name, _, t, c, length = shape
    static = Case(name, ACC_BATCH, t, c, length, seed=7)
    fresh = Case(name, ACC_BATCH, t, c, length, seed=8)
    # the captured kernels keep static's parameters: the eager reference must use them too
    fresh.bias, fresh.a, fresh.inv, fresh.m, fresh.params = static.bias, static.a, static.inv, static.m, static.params
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            call("add_act_cat", "triton_approx", static)()
            call("sum_act_cat", "triton_approx", static)()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        outs = outputs(call("add_act_cat", "triton_approx", static)()) + outputs(
            call("sum_act_cat", "triton_approx", static)()
        )
    for name in ("y", "h", "total", "ctx"):
        getattr(static, name).copy_(getattr(fresh, name))
    g.replay()
    torch.cuda.synchronize()
    want = outputs(call("add_act_cat", "triton_approx", fresh)()) + outputs(call("sum_act_cat", "triton_approx", fresh)())
    same = all(torch.equal(a, b) for a, b in zip(outs, want))
    return {"replay_equals_eager": same}


# ----------------------------------------------------------------------------- main
def variants(pattern: str) -> list[str]:
    out = ["compile"]
    if pattern == "add_act_cat":
        out.append("compile_nosin")
    if TRITON_OK:
        modes = SIN_MODES if pattern in ("add_act_cat", "act_cat") else ["approx"]
        out += [f"triton_{m}" for m in modes] if pattern != "add" else ["triton_approx"]
        if pattern == "add_act_cat":
            out += [f"triton_approx_b{b}_w{w}" for b, w in TILES]
    return out


def run_one(pattern: str, variant: str, k: Case, acc: Case, copy_gbps: float) -> None:
    row: dict[str, Any] = {"pattern": pattern, "shape": [k.b, k.t, k.c], "ctx": k.length, "variant": variant}
    try:
        t = time.perf_counter()
        got = outputs(call(pattern, variant, acc)())  # compiles / JITs on the small batch
        sync()
        row["first_call_s"] = round(time.perf_counter() - t, 2)
        if not variant.startswith("triton_approx_b"):
            sin = variant != "compile_nosin"
            err = error(got, reference(pattern, acc, sin=sin))
            if variant == "triton_none":
                err["note"] = "sin replaced by (a x) x: wrong on purpose"
            RESULT["accuracy"].append({"pattern": pattern, "shape": k.name, "variant": variant, **err})
        ms = timeit(call(pattern, variant, k))
        gbps = k.bytes(pattern) / ms / 1e6
        row.update(ms=round(ms, 4), gbps=round(gbps, 1), pct_of_copy=round(100 * gbps / copy_gbps, 1))
        log(f"{pattern:12s} {k.name:5s} {variant:26s} {ms:8.3f} ms {gbps:8.1f} GB/s")
    except Exception as exc:  # noqa: BLE001 - one failure loses nothing else
        traceback.print_exc()
        row["error"] = f"{type(exc).__name__}: {exc}"[:400]
        RESULT["errors"].append(f"{pattern}/{k.name}/{variant}: {row['error']}")
    RESULT["results"].append(row)
    save()


def table(copy_gbps: float) -> str:
    lines = [f"device {RESULT['env']['device']}  copy_ {copy_gbps:.0f} GB/s (read+write)"]
    lines.append(f"{'pattern':12s} {'shape':16s} {'variant':26s} {'ms':>8s} {'GB/s':>8s} {'%copy':>6s}")
    for r in RESULT["results"]:
        shape = "x".join(map(str, r["shape"])) + f"+{r['ctx']}"
        if "ms" in r:
            lines.append(
                f"{r['pattern']:12s} {shape:16s} {r['variant']:26s} {r['ms']:8.3f} {r['gbps']:8.1f} {r['pct_of_copy']:6.1f}"
            )
        else:
            lines.append(f"{r['pattern']:12s} {shape:16s} {r['variant']:26s} ERROR {r.get('error', '')[:60]}")
    lines.append("accuracy vs float64 (max abs, max bf16 ulps of the reference, share not correctly rounded):")
    for a in RESULT["accuracy"]:
        lines.append(
            f"  {a['pattern']:12s} {a['shape']:5s} {a['variant']:22s} {a['max_abs']:.3g} {a['max_bf16_ulp']:.3g}"
            f" {a['frac_not_rounded']:.4f}{'  (' + a['note'] + ')' if 'note' in a else ''}"
        )
    for n in RESULT["notes"]:
        lines.append(f"note: {n}")
    lines.append(f"graph check: {RESULT.get('graph_check')}")
    lines.append(f"errors: {RESULT['errors']}")
    lines.append(f"total wall {elapsed():.0f}s")
    return "\n".join(lines)


def main() -> int:
    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = None
    RESULT["env"] = {
        "device": "cpu (dry run)" if CPU else torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "compile": COMPILE,
        "interpret": INTERPRET,
    }
    if not TRITON_OK:
        RESULT["notes"].append(
            "Triton variants skipped: " + ("CPU dry run (set TRITON_INTERPRET=1 with Triton installed to run them)"
                                           if CPU else "Triton or CUDA unavailable")
        )
    elif CPU:
        RESULT["notes"].append("Triton variants ran in Triton's CPU interpreter: timings meaningless, "
                               "approx modes use tl.cos/tl.sin on the reduced argument, bf16 casts truncate")
    import torch._dynamo as dynamo

    dynamo.config.recompile_limit = max(dynamo.config.recompile_limit, 64)
    log("env", RESULT["env"])
    copy_gbps = copy_bandwidth()
    RESULT["copy_gbps"] = float(f"{copy_gbps:.3g}")  # 3 significant digits: a loaded CPU copy stays > 0
    log(f"copy_ {copy_gbps:.1f} GB/s")
    save()
    plan = [("add_act_cat", s) for s in SHAPES] + [
        (p, s) for p in ("act_cat", "sum_act_cat", "add") for s in SHAPES
    ]
    with torch.inference_mode():
        cases: dict[str, tuple[Case, Case]] = {}
        for pattern, (name, b, t, c, length) in plan:
            if elapsed() > BUDGET:
                RESULT["errors"].append(f"{pattern}/{name}: skipped (budget)")
                continue
            if name not in cases:
                cases.clear()  # one full-size case in memory at a time
                if not CPU:
                    torch.cuda.empty_cache()
                cases[name] = (Case(name, b, t, c, length, seed=1), Case(name, ACC_BATCH, t, c, length, seed=2))
            k, acc = cases[name]
            for v in variants(pattern):
                if elapsed() > BUDGET:
                    RESULT["errors"].append(f"{pattern}/{name}/{v}: skipped (budget)")
                    break
                run_one(pattern, v, k, acc, copy_gbps)
        try:
            RESULT["graph_check"] = graph_check(SHAPES[-1])
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            RESULT["graph_check"] = {"error": f"{type(exc).__name__}: {exc}"[:400]}
    RESULT["total_wall_s"] = round(elapsed(), 1)
    save()
    txt = table(copy_gbps)
    print("\n" + txt)
    (OUT / "codec_act_bench.txt").write_text(txt + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
