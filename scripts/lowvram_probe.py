"""Where the ``low_vram`` server's GPU memory goes, and which levers shrink it (issue 18's
target: whole-GPU peak <= 1,800 MiB in bf16 with the codec on the GPU, itemised).

Each *variant* runs in its own process (a fresh CUDA context; the parent never touches CUDA)
and builds what ``kanitts serve --mode low_vram`` builds for one model: the native engine
(through :func:`kanitts.engine.factory.build_local_backend`) and the serving
:class:`~kanitts.codec.CodecWorker`, then streams one request per engine slot end to end
(tokens -> frames -> PCM), as ``scripts/native_bench.py lowvram`` does. After each part it
records nvidia-smi's used MiB (whole card, all processes) and the torch allocator's figures:

==================  ===========================================================================
part                what it adds
==================  ===========================================================================
context             the bare CUDA context (``torch.zeros(1)``)
engine_weights      the LM's weights (``load_native_model``)
engine_slots        the slot pool (KV cache, conv state, sampling state)
engine_graphs       the decode step's warm-up and CUDA graphs (cuBLAS handles and workspaces)
engine_ready        the scheduler thread and its warm-up requests (prefill, sampling kernels)
codec_weights       the NanoCodec in bf16
codec_warm          the worker's pool state, compiled ops, cuDNN, the codec's CUDA graphs
streaming           the peak while streaming (nvidia-smi polled every 50 ms; torch's figures
                    after it, ``max_allocated_mib`` the peak since streaming began)
==================  ===========================================================================

Each part's ``outside_torch`` is its nvidia-smi delta minus its torch-reserved delta (library
modules, handles, graph executables: memory the caching allocator does not see). The row also
summarises the allocator's segments by pool (ordinary / CUDA-graph pools) and stream, and the
largest allocated blocks (cuBLAS workspaces show up as blocks of the workspace size).

Variants (``--variants``, comma-separated; default: :data:`DEFAULT_VARIANTS`): see
:data:`VARIANTS`. Run on an otherwise idle GPU::

    python scripts/lowvram_probe.py --assets /tmp/kanitts-native --json /tmp/lowvram.json

(the full-size random-weight assets are built first if missing). ``--budget-s`` (default 230)
bounds the whole run, asset building included: variants not started by then are listed as
skipped, so run the rest in a second call. ``--device cpu`` runs the same flow on the CPU
(nvidia-smi and torch figures are null): a smoke test.
Prints one ``RESULT {json}`` line per variant and appends the rows to ``--json`` (a JSON list).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("lowvram_probe")
MiB = 2**20

#: name -> (environment set for the child process, in-process options). ``baseline`` is what
#: ``kanitts serve --mode low_vram`` builds for one model today (4 codec streams; the preset's
#: process environment, ``kanitts.engine.modes.NATIVE_MODE_ENV``: expandable segments, 128 KiB
#: cuBLAS workspaces; ``mode_env_off`` undoes it);
#: ``run4`` is what ``native_bench.py lowvram`` measured in BENCHMARKS.md's run 4 (the codec
#: sized for the default three languages, 12 streams, and torch's 32 MiB workspaces); an
#: explicit ``CUBLAS_WORKSPACE_CONFIG`` (``cublas_*``) overrides the preset's size. Options:
#: ``multi_language`` (the default three-language settings: the codec sized for 3 engines x 4
#: seqs although one engine is built, as run 4 measured), ``enforce_eager`` (engine without
#: decode graphs), ``codec_graphs`` (False: the codec pool runs eagerly), ``codec_one_bucket``
#: (only the largest batch bucket is captured), ``codec_autotune`` (False: cuDNN's heuristics,
#: not ``cudnn.benchmark``, pick the conv algorithms captured), ``cudnn`` (False:
#: ``torch.backends.cudnn.enabled = False`` for the whole process; the engine uses no cuDNN),
#: ``codec_first`` (the codec built and warmed before the engine, the order ``service.start``
#: uses), ``empty_cache`` (``torch.cuda.empty_cache()`` once the engine is ready),
#: ``clear_cublas`` (also ``torch._C._cuda_clearCublasWorkspaces()`` first: the workspaces of
#: streams no longer used -- the capture warm-up's -- go back; safe here because the engine's
#: graphs were captured on their own stream and the codec's come later),
#: ``engine_one_span`` (True: the decode graphs attend over all ``max_len`` positions, one graph
#: per batch bucket instead of one per bucket x attention span, as the low_vram preset now
#: does; False, variant ``engine_spans``: one per bucket x span, what the spans cost),
#: ``libs`` (right after the context, one small call into each library the server uses,
#: marked apart: ``lib_cublas`` a bf16 matmul, ``lib_sdpa`` masked attention as the engine
#: calls it, ``lib_cudnn`` a channels-last bf16 conv as the codec's, ``lib_sort`` the
#: sampler's sort + cumsum: what loading each costs; the main thread's own handles and
#: workspaces come on top of the server's, so compare its later parts, not its total).
VARIANTS: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "baseline": ({}, {}),
    # the preset's process environment undone (torch's defaults: 32 MiB cuBLAS workspaces)
    "mode_env_off": ({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}, {}),
    "codec12": ({}, {"multi_language": True}),
    "run4": ({"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}, {"multi_language": True}),
    "server_order": ({}, {"codec_first": True}),
    "expandable": ({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}, {}),
    "codec_no_graphs": ({}, {"codec_graphs": False}),
    "codec_one_bucket": ({}, {"codec_one_bucket": True}),
    "codec_no_autotune": ({}, {"codec_autotune": False}),
    "no_cudnn": ({}, {"cudnn": False}),
    "cublas_4096_8": ({"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}, {}),
    "cublas_16_8": ({"CUBLAS_WORKSPACE_CONFIG": ":16:8"}, {}),
    "clear_cublas": ({}, {"empty_cache": True, "clear_cublas": True}),
    "engine_eager": ({}, {"enforce_eager": True}),
    "engine_one_span": ({}, {"engine_one_span": True}),
    # the decode graphs per attention span too (what low_vram's single span saves)
    "engine_spans": ({}, {"engine_one_span": False}),
    "lazy_modules": ({"CUDA_MODULE_LOADING": "LAZY"}, {}),
    "empty_cache": ({}, {"empty_cache": True}),
    "libs": ({}, {"libs": True}),
    "combo": ({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "CUBLAS_WORKSPACE_CONFIG": ":16:8"},
              {"empty_cache": True}),
}
#: What runs without ``--variants``, most telling first (a budget cut drops the tail).
DEFAULT_VARIANTS = ("baseline", "run4", "cublas_4096_8", "cublas_16_8", "clear_cublas", "expandable",
                    "codec_no_graphs", "no_cudnn", "engine_eager", "engine_one_span", "codec_no_autotune",
                    "codec_one_bucket", "combo", "empty_cache", "libs", "codec12", "lazy_modules", "server_order")
#: The parts a row itemises (``codec_*`` come before ``engine_*`` under ``codec_first``;
#: the ``libs`` variant adds :data:`LIB_PARTS` after the context).
PARTS = ("context", "engine_weights", "engine_slots", "engine_graphs", "engine_ready", "codec_weights",
         "codec_warm", "streaming")
LIB_PARTS = ("lib_cublas", "lib_sdpa", "lib_cudnn", "lib_sort")


def smi_used_mib() -> int | None:
    """GPU memory used on the card (all processes), MiB, from nvidia-smi; None without it."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=False).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return int(out[0]) if out and out[0].isdigit() else None


# ---------------------------------------------------------------------------- the child
class _Marks:
    """nvidia-smi and torch allocator figures after each part (null off CUDA)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.parts: dict[str, dict[str, Any]] = {}

    def torch_figures(self) -> dict[str, float | None]:
        import torch

        if not self.cuda:
            return {"reserved_mib": None, "allocated_mib": None, "max_allocated_mib": None}
        s = torch.cuda.memory_stats()
        return {"reserved_mib": round(s.get("reserved_bytes.all.current", 0) / MiB, 1),
                "allocated_mib": round(s.get("allocated_bytes.all.current", 0) / MiB, 1),
                "max_allocated_mib": round(s.get("allocated_bytes.all.peak", 0) / MiB, 1)}

    def mark(self, name: str, smi: int | None = None) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
        self.parts[name] = {"smi_mib": smi if smi is not None else (smi_used_mib() if self.cuda else None),
                            **self.torch_figures()}

    def deltas(self) -> dict[str, dict[str, float | None]]:
        """Per part, in build order: nvidia-smi and torch-reserved growth over the previous part, and the
        growth outside torch's allocator (smi minus reserved)."""
        out, prev = {}, None
        for name, cur in self.parts.items():  # in the order the parts were built
            if prev is None or cur["smi_mib"] is None or prev["smi_mib"] is None:
                out[name] = {"smi": None, "torch_reserved": None, "outside_torch": None}
            else:
                smi = cur["smi_mib"] - prev["smi_mib"]
                res = round(cur["reserved_mib"] - prev["reserved_mib"], 1)
                out[name] = {"smi": smi, "torch_reserved": res, "outside_torch": round(smi - res, 1)}
            prev = cur
        return out


def _segments() -> dict[str, Any]:
    """The allocator's segments summed by (pool, stream), and the largest allocated block sizes."""
    import torch

    pools: dict[str, dict[str, float]] = {}
    sizes: dict[int, int] = {}
    for seg in torch.cuda.memory_snapshot():
        pool = "ordinary" if tuple(seg.get("segment_pool_id", (0, 0))) == (0, 0) else f"graph{tuple(seg['segment_pool_id'])}"
        key = f"{pool}@stream{seg.get('stream', 0)}"
        p = pools.setdefault(key, {"segments": 0, "reserved_mib": 0.0, "allocated_mib": 0.0})
        p["segments"] += 1
        p["reserved_mib"] = round(p["reserved_mib"] + seg["total_size"] / MiB, 1)
        p["allocated_mib"] = round(p["allocated_mib"] + seg["allocated_size"] / MiB, 1)
        for block in seg.get("blocks", []):
            if block.get("state") == "active_allocated" and block["size"] >= MiB:
                sizes[block["size"]] = sizes.get(block["size"], 0) + 1
    largest = sorted(sizes.items(), reverse=True)[:8]
    return {"pools": pools, "largest_blocks_mib": [[round(s / MiB, 2), n] for s, n in largest]}


def _touch_libraries(device: str, marks: _Marks) -> None:
    """One small call into each library the server loads, a mark after each (``libs``)."""
    import torch
    import torch.nn.functional as F

    bf16 = {"device": device, "dtype": torch.bfloat16}
    a = torch.randn(64, 1024, **bf16)
    (a @ torch.randn(1024, 1024, **bf16)).sum()
    marks.mark("lib_cublas")
    q, kv = torch.randn(4, 8, 2, 64, **bf16), torch.randn(4, 8, 256, 64, **bf16)
    mask = torch.ones(4, 1, 2, 256, device=device, dtype=torch.bool)
    F.scaled_dot_product_attention(q, kv, kv, attn_mask=mask)
    marks.mark("lib_sdpa")
    x = torch.randn(4, 64, 1, 512, **bf16).to(memory_format=torch.channels_last)
    F.conv2d(x, torch.randn(64, 64, 1, 7, **bf16).to(memory_format=torch.channels_last), dilation=(1, 3))
    marks.mark("lib_cudnn")
    p = torch.randn(4, 4032, device=device).softmax(-1)
    p.sort(dim=-1, descending=True).values.cumsum(-1)
    marks.mark("lib_sort")


def _apply_codec_options(worker: Any, opts: dict[str, Any]) -> None:
    """Variant options on a built worker's pool (before its warm-up): a probe's reach into
    the pool, not a serving switch."""
    pool = worker._pool
    if opts.get("codec_graphs") is False:
        pool.cuda_graphs = False
    if opts.get("codec_one_bucket"):
        pool.buckets = (pool.buckets[-1],)


def run_child(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Build and stream the low_vram server's parts in this process; the variant's row."""
    import torch

    from kanitts.bench.e2e_streams import stream_audio_seconds
    from kanitts.codec import CodecWorker, NanoCodec
    from kanitts.config import Settings
    from kanitts.engine.device import pick_dtype
    from kanitts.engine.factory import build_local_backend
    from kanitts.engine.native import backend as native_backend
    from kanitts.models import codec_pool_size

    env, opts = VARIANTS[variant]
    cuda = args.device.startswith("cuda")
    if opts.get("cudnn") is False:
        torch.backends.cudnn.enabled = False
    if opts.get("codec_autotune") is False:
        from kanitts.codec import fast

        fast.cudnn_autotune = lambda enabled=True: contextlib.nullcontext()  # heuristics choose
    marks = _Marks(cuda)
    row: dict[str, Any] = {"variant": variant, "env": env, "options": opts, "device": args.device,
                           "torch": torch.__version__}
    if cuda:
        row["gpu"] = torch.cuda.get_device_name()
    torch.zeros(1, device=args.device)
    marks.mark("context")
    if opts.get("libs"):
        _touch_libraries(args.device, marks)

    # The engine's build, part by part: wrap what NativeBackend._build calls (in its thread).
    load, slot_pool, capture = native_backend.load_native_model, native_backend.SlotPool, native_backend.DecodeStep.capture

    def load_marked(*a: Any, **k: Any) -> Any:
        out = load(*a, **k)
        marks.mark("engine_weights")
        return out

    def pool_marked(*a: Any, **k: Any) -> Any:
        out = slot_pool(*a, **k)
        marks.mark("engine_slots")
        return out

    def capture_marked(self: Any) -> None:
        capture(self)
        marks.mark("engine_graphs")

    if opts.get("engine_one_span") is not None:
        step_cls = native_backend.DecodeStep
        one = bool(opts["engine_one_span"])

        class SpanStep(step_cls):  # type: ignore[misc, valid-type]
            def __init__(self, model: Any, pool: Any, sampler: Any, **kw: Any) -> None:
                kw["spans"] = [pool.max_len] if one else None
                super().__init__(model, pool, sampler, **kw)

        native_backend.DecodeStep = SpanStep
    native_backend.load_native_model = load_marked
    native_backend.SlotPool = pool_marked
    native_backend.DecodeStep.capture = capture_marked
    codec_path = str(Path(args.assets) / "codec.nemo")
    settings = Settings(multi_language=bool(opts.get("multi_language", False)),
                        engine={"mode": "low_vram", "backend": "native", "device": args.device,
                                **({"enforce_eager": True} if opts.get("enforce_eager") else {})},
                        codec={"model": codec_path, "device": args.device})
    backend = build_local_backend(settings, str(Path(args.assets) / "model"))
    c = settings.codec
    peak: list[int] = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            v = smi_used_mib()
            peak[0] = max(peak[0], v or 0)
            done.wait(0.05)

    async def engine() -> None:
        await backend.start()
        if opts.get("clear_cublas") and cuda:
            clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
            row["cleared_cublas"] = clear is not None
            if clear is not None:
                clear()
        if opts.get("empty_cache") and cuda:
            torch.cuda.empty_cache()
        marks.mark("engine_ready")
        ws = getattr(torch.backends.cuda, "cublas_workspace_size", None)
        row["cublas_workspace_bytes"] = ws() if cuda and ws is not None else None  # what the engine left set
        row.update(slots=backend.max_num_seqs, max_len=backend.max_model_len,  # type: ignore[attr-defined]
                   lm_graphs=len(backend.scheduler.step.graphs),  # type: ignore[attr-defined]
                   lm_spans=list(backend.scheduler.step.spans),  # type: ignore[attr-defined]
                   weights_mib=round(backend.model.nbytes() / MiB, 1),  # type: ignore[attr-defined]
                   engine_startup_s=round(backend.startup_seconds, 2))  # type: ignore[attr-defined]

    async def codec() -> CodecWorker:
        dtype = pick_dtype(c.dtype, torch.device(args.device))
        model = await asyncio.to_thread(NanoCodec.from_pretrained, codec_path, device=args.device, dtype=dtype)
        marks.mark("codec_weights")
        worker = CodecWorker(model, max_streams=codec_pool_size(settings), first_chunk_frames=c.first_chunk_frames,
                             chunk_frames=c.chunk_frames, fast=c.fast, max_batch_frames=c.max_batch_frames)
        _apply_codec_options(worker, opts)
        t0 = time.perf_counter()
        row["codec_graphs"] = await asyncio.to_thread(worker.warmup)
        row["codec_warmup_s"] = round(time.perf_counter() - t0, 2)
        row["codec_streams"] = worker.max_streams
        marks.mark("codec_warm")
        return worker

    async def go() -> None:
        if opts.get("codec_first"):
            worker = await codec()
            await engine()
        else:
            await engine()
            worker = await codec()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            threading.Thread(target=poll, daemon=True).start()

        t0 = time.perf_counter()
        audio = await stream_audio_seconds(backend, worker, backend.max_num_seqs, args.tokens)  # type: ignore[attr-defined]
        row["streams_audio_s"] = round(sum(audio), 2)
        row["streams_wall_s"] = round(time.perf_counter() - t0, 2)
        done.set()
        marks.mark("streaming", smi=max(peak[0], smi_used_mib() or 0) if cuda else None)
        await worker.aclose()
        await backend.close()

    asyncio.run(go())
    row["parts"] = marks.parts
    row["deltas"] = marks.deltas()
    row["smi_peak_mib"] = marks.parts["streaming"]["smi_mib"]
    if cuda:
        try:
            row["allocator"] = _segments()
        except Exception as exc:  # noqa: BLE001 - the figures above must not be lost for it
            row["allocator"] = {"error": repr(exc)}
    return row


# ---------------------------------------------------------------------------- the parent
def _summary(row: dict[str, Any]) -> str:
    d = row.get("deltas") or {}
    parts = " ".join(f"{k}={v['smi']}/{v['torch_reserved']}/{v['outside_torch']}" for k, v in d.items())
    return f"{row['variant']:<18} peak={row.get('smi_peak_mib')} {parts}"


def run_parent(args: argparse.Namespace) -> int:
    names = [v for v in args.variants.split(",") if v] if args.variants else list(DEFAULT_VARIANTS)
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        log.error("unknown variants %s; known: %s", unknown, ", ".join(VARIANTS))
        return 2
    t_end = time.monotonic() + args.budget_s  # asset building included
    if args.device.startswith("cuda"):
        # builds in a subprocess: this process never touches CUDA
        from kanitts.bench.assets import ensure_assets

        ensure_assets(args.assets)
    rows = []
    for name in names:
        left = t_end - time.monotonic()
        if left < 10:
            rows.append({"variant": name, "skipped": f"budget of {args.budget_s} s spent"})
            log.info("RESULT %s", json.dumps(rows[-1]))
            continue
        # what `kanitts serve --mode low_vram` sets before CUDA starts, then the variant's own
        env = {**os.environ, **_serving_env(args), **VARIANTS[name][0]}
        idle = smi_used_mib()
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "row.json"
            cmd = [sys.executable, __file__, "--child", name, "--child-out", str(out), "--device", args.device,
                   "--assets", args.assets, "--tokens", str(args.tokens)]
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                                      timeout=min(left, args.variant_timeout_s))
                row = (json.loads(out.read_text()) if proc.returncode == 0 and out.exists()
                       else {"variant": name, "error": (proc.stderr or proc.stdout)[-2000:]})
            except subprocess.TimeoutExpired:
                row = {"variant": name, "error": f"timed out after {min(left, args.variant_timeout_s):.0f} s"}
        row["smi_idle_before_mib"] = idle
        row["wall_s"] = round(time.monotonic() - t0, 1)
        rows.append(row)
        log.info("RESULT %s", json.dumps(row))
        if args.json:
            path = Path(args.json)
            saved = json.loads(path.read_text()) if path.exists() else []
            path.write_text(json.dumps([*saved, row], indent=1))
    log.info("summary (per part, MiB: nvidia-smi delta / torch reserved delta / outside torch):\n%s",
             "\n".join(_summary(r) if "deltas" in r else f"{r['variant']:<18} {r.get('error') or r.get('skipped')}"
                       for r in rows))
    return 0 if all("deltas" in r or "skipped" in r for r in rows) else 1


def _serving_env(args: argparse.Namespace) -> dict[str, str]:
    """The product's process environment for the one-model low_vram server on CUDA
    (:func:`kanitts.engine.factory.process_env`; empty on the CPU)."""
    if not args.device.startswith("cuda"):
        return {}
    from kanitts.config import Settings
    from kanitts.engine.factory import process_env

    return process_env(Settings(engine={"mode": "low_vram", "backend": "native", "device": args.device}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--assets", default="/tmp/kanitts-native", help="folder with model/ and codec.nemo")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smoke test)")
    ap.add_argument("--tokens", type=int, default=200, help="tokens per streamed request")
    ap.add_argument("--json", default="", help="append the rows to this JSON list")
    ap.add_argument("--budget-s", type=float, default=230.0, help="variants not started by then are skipped")
    ap.add_argument("--variant-timeout-s", type=float, default=120.0)
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.child:
        Path(args.child_out).write_text(json.dumps(run_child(args.child, args)))
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
