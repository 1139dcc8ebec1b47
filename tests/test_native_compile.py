"""The native decode step fused by ``torch.compile`` (Inductor's C++ backend on the CPU, tiny
checkpoint, float32): one graph per (bucket, span) with no graph break, the same tokens as the
uncompiled step for greedy and seeded sampled rows, and every state write done in place.

"In place" is checked on the generated code: no buffer the size of a KV cache, conv state or
``seen`` tensor is allocated, i.e. no whole-tensor copy per step. Inductor only learned to
reinplace a write *through a view* of a graph input in torch 2.12; the device runs 2.11, where
such a write copies the whole tensor twice (the cause of the slow compiled step in BENCHMARKS.md).
The test therefore compiles with that newer rule switched off, so it fails on any torch if a
state write goes through a view again.
"""

from __future__ import annotations

import contextlib
import re

import pytest
import torch

from kanitts import tokens as tk
from kanitts.engine.native.graphs import DecodeStep
from kanitts.engine.native.sampler import Sampler
from kanitts.engine.native.slots import SlotParams, SlotPool
from kanitts.engine.native.weights import load_lfm2

pytestmark = pytest.mark.slow  # one Inductor compile of the whole step (~1-2 min on 2 cores)

SLOTS, MAX_LEN, BUCKET, STEPS = 5, 48, 4, 12  # slot 4 stays idle: the step covers a prefix
PROMPT = tk.with_opening([tk.START_OF_HUMAN, 1, 40, 41, 42, tk.END_OF_TEXT, tk.END_OF_HUMAN])
#: one greedy row, three seeded sampled rows (temperature, top_p, repetition_penalty, seed)
ROWS = [(0.0, 1.0, 1.0, 0), (0.7, 0.5, 1.3, 7), (0.8, 0.9, 1.1, 3), (1.0, 1.0, 1.0, 4)]


def admitted(path: str) -> tuple[SlotPool, Sampler, object]:
    """A pool whose first four slots hold prefilled requests (as the scheduler admits them)."""
    model = load_lfm2(path, "cpu", torch.float32)
    pool = SlotPool(model, SLOTS, MAX_LEN)
    sampler = Sampler(model, pool)
    pool.admit(list(range(len(ROWS))), [
        SlotParams(prompt=PROMPT, temperature=t, top_p=tp, repetition_penalty=rp, seed=seed, min_tokens=0,
                   constrained=True, stop_ids=tk.STOP_TOKEN_IDS) for t, tp, rp, seed in ROWS])
    n = len(ROWS)
    idx = torch.arange(n)
    ids = torch.tensor([PROMPT] * n)
    lens = torch.full((n,), len(PROMPT))
    with torch.inference_mode():
        hidden = model.prefill(pool.cache, idx, ids, lens)
        pool.cache_len.index_copy_(0, idx, lens)
        pool.rope_pos.index_copy_(0, idx, lens.float())
        pool.tok.index_copy_(0, idx, ids[:, -1])
        sampler.sample(hidden[:, -1], idx, False)
    return pool, sampler, model


def generate(step: DecodeStep) -> list[list[int]]:
    out = [step.pool.tok[: len(ROWS)].tolist()]
    with torch.inference_mode():
        for i in range(STEPS):
            step.run(len(ROWS), len(PROMPT) + i + 1)
            out.append(step.pool.tok[: len(ROWS)].tolist())
    return out


@contextlib.contextmanager
def reinplace_as_torch_2_11():
    """Inductor without the torch 2.12 rule that reinplaces writes through views of graph
    inputs (the rule's helper says no), fresh compiles only (no cached code)."""
    import torch._dynamo
    import torch._inductor.config as icfg
    from torch._inductor.fx_passes import reinplace

    torch._dynamo.reset()
    with contextlib.ExitStack() as stack:
        if hasattr(reinplace, "_is_layout_preserving_view_copy_back"):
            mp = pytest.MonkeyPatch()
            stack.callback(mp.undo)
            mp.setattr(reinplace, "_is_layout_preserving_view_copy_back", lambda *a, **k: False)
        stack.enter_context(icfg.patch(force_disable_caches=True))
        yield
    torch._dynamo.reset()


def allocations(code: str) -> list[tuple[int, ...]]:
    """Shapes of the buffers Inductor's CPU wrapper code allocates."""
    return [tuple(int(d) for d in m.group(1).split(",") if d.strip())
            for m in re.finditer(r"empty_strided_cpu\(\(([\d, ]*)\)", code)]


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def state_sizes(pool: SlotPool) -> set[int]:
    c = pool.cache
    big = [*c.k.values(), *c.v.values(), *c.conv.values(), pool.seen]
    return {t.numel() for t in big}


@pytest.fixture(scope="module")
def compiled_run(tiny_model):
    from torch._inductor.utils import run_and_get_code

    pool, sampler, model = admitted(tiny_model)
    step = DecodeStep(model, pool, sampler, compile=True, sizes=[BUCKET], spans=[MAX_LEN])
    with reinplace_as_torch_2_11():
        tokens, codes = run_and_get_code(generate, step)
    return tokens, "\n".join(codes), state_sizes(pool)


def test_the_compiled_step_gives_the_uncompiled_steps_tokens(tiny_model, compiled_run):
    pool, sampler, model = admitted(tiny_model)
    eager = generate(DecodeStep(model, pool, sampler, sizes=[BUCKET], spans=[MAX_LEN]))
    tokens, _, _ = compiled_run
    assert tokens == eager
    assert len({tuple(r) for r in zip(*eager)}) == len(ROWS)  # the rows really differ


def test_the_compiled_step_writes_its_state_in_place(compiled_run):
    _, code, sizes = compiled_run
    assert "def call" in code  # the step was compiled (one graph for the one bucket and span)
    whole = [s for s in allocations(code) if numel(s) in sizes]
    assert not whole, f"buffers the size of a whole state tensor: {whole}"


def test_the_in_place_check_catches_a_write_through_a_view():
    from torch._inductor.utils import run_and_get_code

    def write(cache: torch.Tensor, rows: torch.Tensor, vals: torch.Tensor) -> None:
        cache.view(-1, 16).index_copy_(0, rows, vals)  # the old model code's pattern

    cache = torch.zeros(6, 40, 16)
    with reinplace_as_torch_2_11():
        _, codes = run_and_get_code(torch.compile(write, dynamic=False, fullgraph=True), cache,
                                    torch.tensor([3, 50]), torch.ones(2, 16))
    assert cache[0, 3].sum() == 16 and cache[1, 10].sum() == 16
    assert any(numel(s) == cache.numel() for s in allocations("\n".join(codes)))


def test_the_compiled_step_has_no_graph_break(tiny_model):
    import torch._dynamo

    pool, sampler, model = admitted(tiny_model)
    step = DecodeStep(model, pool, sampler, sizes=[BUCKET], spans=[MAX_LEN])
    torch._dynamo.reset()
    with torch.inference_mode():
        ex = torch._dynamo.explain(step._constrained_step)(BUCKET, MAX_LEN)
    torch._dynamo.reset()
    assert (ex.graph_count, ex.graph_break_count) == (1, 0), ex.break_reasons


def test_engine_compile_is_a_native_engine_option(tiny_model, tiny_codec):
    from _liveserver import tiny_settings

    from kanitts.models import build_backend
    from kanitts.preflight import ignored_engine_options

    s = tiny_settings(tiny_model, tiny_codec, engine={"backend": "native", "compile": True})
    assert build_backend(s, tiny_model).compile is True
    assert ignored_engine_options(s) == []
    assert build_backend(tiny_settings(tiny_model, tiny_codec, engine={"backend": "native"}), tiny_model).compile is False
