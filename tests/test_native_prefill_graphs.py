"""The bucketed admission prefill (``GroupPrefill``) on the CPU (tiny checkpoints, float32):
padded to group and width buckets it gives the unpadded eager prefill's first tokens and slot
state, never writes a slot outside its group, falls back to the eager path where it must, and
a seeded stream is the same with it on or off, for v1 and KaniTTS-2 models. (On CUDA the
same padded computation is captured as graphs: tests/gpu/test_native_gpu.py; here Dynamo checks
it traces without a host sync.)"""

from __future__ import annotations

import asyncio

import pytest
import torch

from kanitts import tokens as tk
from kanitts.engine.base import SamplingParams
from kanitts.engine.native.backend import NativeBackend
from kanitts.engine.native.graphs import DecodeStep
from kanitts.engine.native.prefill_graphs import (
    MAX_GRAPH_ROWS,
    MAX_GRAPHED_ADMISSION,
    PREFILL_WIDTHS,
    GroupPrefill,
    group_buckets,
    width_buckets,
)
from kanitts.engine.native.sampler import Sampler
from kanitts.engine.native.scheduler import Request, Scheduler
from kanitts.engine.native.slots import SlotParams, SlotPool
from kanitts.engine.native.weights import load_lfm2
from kanitts.tiny_kanitts2 import write_kanitts2_model

SLOTS, MAX_LEN = 12, 64
#: (temperature, top_p, repetition_penalty): greedy and seeded sampled rows
MIXES = [(0.0, 1.0, 1.0), (0.8, 0.9, 1.2), (1.0, 1.0, 1.0), (0.6, 0.5, 1.1)]


def prompt_of(rows: int, salt: int = 0) -> list[int]:
    """A prompt of ``rows`` ids ending with the opening (as the engine's prompts do)."""
    text = [40 + (salt * 7 + j) % 200 for j in range(rows - 4)]
    return [tk.START_OF_HUMAN, *text, tk.END_OF_HUMAN, *tk.OPENING] if rows >= 5 else text[:rows]


def params(prompt: list[int], i: int, constrained: bool = True) -> SlotParams:
    t, tp, rp = MIXES[i % len(MIXES)]
    return SlotParams(prompt=prompt, temperature=t, top_p=tp, repetition_penalty=rp, seed=100 + i, min_tokens=0,
                      constrained=constrained, stop_ids=tk.STOP_TOKEN_IDS)


@pytest.fixture(scope="module")
def model(tiny_model):
    return load_lfm2(tiny_model, "cpu", torch.float32)


@pytest.fixture(scope="module")
def k2_model(tmp_path_factory) -> str:
    return str(write_kanitts2_model(tmp_path_factory.mktemp("k2"), seed=3, audio_step=0.5, learnable_rope=True))


@pytest.fixture(scope="module")
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def scheduler(model, loop, prefill: bool, **kw) -> Scheduler:
    pool = SlotPool(model, SLOTS, MAX_LEN)
    sampler = Sampler(model, pool)
    gp = GroupPrefill(model, pool, sampler, **kw) if prefill else None
    return Scheduler(model, pool, sampler, DecodeStep(model, pool, sampler), prefill=gp)


def admit(sched: Scheduler, loop, prompts: list[list[int]], constrained: bool = True) -> tuple[list[Request], list[int]]:
    reqs = [Request(rid=f"r{i}", prompt=pr, slot_params=params(pr, i, constrained), max_new=8,
                    stops=frozenset(tk.STOP_TOKEN_IDS), out=asyncio.Queue(), loop=loop)
            for i, pr in enumerate(prompts)]
    sched.waiting.extend(reqs)
    with torch.inference_mode():
        got = sched._admit()
        first = sched._first.tolist()
    assert got == reqs
    return reqs, first


def slot_state(pool: SlotPool, slot: int, rows: int) -> dict[str, torch.Tensor]:
    """A slot's state: the K/V rows its prompt filled, its conv state and its sampling state."""
    c = pool.cache
    out = {f"k{i}": t[slot, :rows] for i, t in c.k.items()}
    out |= {f"v{i}": t[slot, :rows] for i, t in c.v.items()}
    out |= {f"conv{i}": t[slot] for i, t in c.conv.items()}
    for name in ("cache_len", "rope_pos", "tok", "gen", "seen"):
        out[name] = getattr(pool, name)[slot]
    return {k: v.clone() for k, v in out.items()}


def test_buckets_are_aligned_and_capped():
    assert group_buckets(64) == [1, 2, 4, 8] and group_buckets(5) == [1, 2, 4, 5] and group_buckets(1) == [1]
    assert width_buckets(2048) == list(PREFILL_WIDTHS) and width_buckets(64) == [16, 32, 48, 64]
    assert width_buckets(10) == []
    assert all(w % 16 == 0 for w in PREFILL_WIDTHS)


def test_graphs_hold_at_most_max_rows_and_wide_groups_replay_in_smaller_chunks(model):
    pool = SlotPool(model, SLOTS, 256)
    gp = GroupPrefill(model, pool, Sampler(model, pool), max_rows=MAX_GRAPH_ROWS)
    assert gp.groups == [1, 2, 4, 8] and gp.widths == list(PREFILL_WIDTHS)
    assert len(gp.keys) == 4 * 8 - 2 and (8, 128) in gp.keys and (4, 256) in gp.keys
    assert (8, 192) not in gp.keys and (8, 256) not in gp.keys
    seen: list[tuple[int, int]] = []
    gp._forward = lambda g, w: seen.append((g, w))  # type: ignore[method-assign]
    gp.run(list(range(8)), [prompt_of(20 if i else 200) for i in range(8)])
    gp.run(list(range(5)), [prompt_of(30) for _ in range(5)])
    assert seen == [(4, 256), (4, 32), (8, 32)]


def test_a_small_pool_gets_graphs_of_fewer_rows_and_large_admissions_stay_eager(model):
    small = SlotPool(model, 4, 2048)  # the low_vram preset's pool
    gp = GroupPrefill(model, small, Sampler(model, small))
    assert gp.max_rows == 256 and max(g * w for g, w in gp.keys) == 256
    assert (1, 256) in gp.keys and (4, 64) in gp.keys and (4, 96) not in gp.keys
    big = SlotPool(model, 64, 256)
    gp = GroupPrefill(model, big, Sampler(model, big))
    assert gp.max_rows == MAX_GRAPH_ROWS
    assert gp.takes(MAX_GRAPHED_ADMISSION, 40) and not gp.takes(MAX_GRAPHED_ADMISSION + 1, 40)
    assert not gp.takes(1, 257)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("base", [14, 17])  # the rows cross the 16-wide bucket's edge
@pytest.mark.parametrize("buckets", [{}, {"widths": [16, 48], "groups": [1, 2]},
                                     {"widths": [16, 48], "groups": [1, 2, 4], "max_rows": 64}],
                         ids=["default-buckets", "coarse-widths-chunked-groups", "chunked-by-padded-rows"])
def test_the_padded_prefill_gives_the_eager_prefills_tokens_and_state(model, loop, n, base, buckets):
    prompts = [prompt_of(base + 3 * i, salt=i) for i in range(n)]
    eager = scheduler(model, loop, prefill=False)
    padded = scheduler(model, loop, prefill=True, **buckets)
    reqs_e, first_e = admit(eager, loop, prompts)
    reqs_p, first_p = admit(padded, loop, prompts)
    assert padded.stats.graphed_prefills == 1 and eager.stats.graphed_prefills == 0
    assert first_p == first_e
    for re_, rp in zip(reqs_e, reqs_p):
        assert re_.slot == rp.slot
        want, got = slot_state(eager.pool, re_.slot, re_.rows), slot_state(padded.pool, rp.slot, rp.rows)
        for key in want:
            if want[key].is_floating_point() and key not in ("rope_pos",):
                torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5, msg=key)
            else:
                assert torch.equal(got[key], want[key]), key
        assert int(got["gen"]) == 1 and int(got["cache_len"]) == len(rp.prompt) == float(got["rope_pos"])
    # the next decode step from that state gives the same tokens
    for s in (eager, padded):
        with torch.inference_mode():
            s.step.run(s.pool.bound(), max(r.rows for r in reqs_e) + 1)
    assert torch.equal(padded.pool.tok[:n], eager.pool.tok[:n])


def test_a_padded_group_never_writes_another_slot(model):
    pool = SlotPool(model, 10, MAX_LEN)
    sampler = Sampler(model, pool)
    gp = GroupPrefill(model, pool, sampler)  # 3 rows -> bucket 4: one pad row repeats slot 6
    gen = torch.Generator().manual_seed(0)
    c = pool.cache
    for t in [*c.k.values(), *c.v.values(), *c.conv.values(), pool.rope_pos, pool.temperature, pool.top_p]:
        t.copy_(torch.rand(t.shape, generator=gen))
    for t in (pool.tok, pool.cache_len, pool.gen, pool.seed):
        t.copy_(torch.randint(0, 1000, t.shape, generator=gen))
    pool.seen.copy_(torch.rand(pool.seen.shape, generator=gen) < 0.5)
    slots = [2, 5, 6]
    prompts = [prompt_of(12 + 2 * i, salt=i) for i in range(3)]
    pool.admit(slots, [params(pr, i) for i, pr in enumerate(prompts)])
    others = [s for s in range(10) if s not in slots]
    tensors = {"tok": pool.tok, "cache_len": pool.cache_len, "rope_pos": pool.rope_pos, "gen": pool.gen,
               "seen": pool.seen, "seed": pool.seed, "temperature": pool.temperature}
    tensors |= {f"k{i}": t for i, t in c.k.items()} | {f"v{i}": t for i, t in c.v.items()}
    tensors |= {f"conv{i}": t for i, t in c.conv.items()}
    before = {k: t[others].clone() for k, t in tensors.items()}
    with torch.inference_mode():
        first = gp.run(slots, prompts).tolist()
    for k, t in tensors.items():
        assert torch.equal(t[others], before[k]), f"{k} of a slot outside the group changed"
    for s, pr, tok in zip(slots, prompts, first):
        assert int(pool.gen[s]) == 1  # the pad row's duplicate write did not count the token twice
        assert int(pool.tok[s]) == tok and int(pool.cache_len[s]) == len(pr)
        assert set(pool.seen[s].nonzero().flatten().tolist()) == {*pr, tok}
        assert tk.AUDIO_TOKEN_START <= tok < tk.AUDIO_TOKEN_START + tk.CODEBOOK_SIZE


def test_unconstrained_or_too_wide_groups_take_the_eager_path(model, loop):
    s = scheduler(model, loop, prefill=True, widths=[16])
    admit(s, loop, [prompt_of(10)], constrained=False)
    admit(s, loop, [prompt_of(17)])
    assert (s.stats.prefills, s.stats.graphed_prefills) == (2, 0)
    admit(s, loop, [prompt_of(16)])
    assert s.stats.graphed_prefills == 1
    assert s.prefill is not None and not s.prefill.covers(17) and s.prefill.covers(16)
    with pytest.raises(ValueError, match="widest"):
        s.prefill.run([0], [prompt_of(20)])


async def _streams(path: str, prefill_on: bool, prompts: list[list[int]], speakers: list | None = None
                   ) -> tuple[list[list[int]], int]:
    b = NativeBackend(path, device="cpu", dtype="float32", max_num_seqs=8, max_model_len=128)
    await b.start()
    sched = b.scheduler
    assert sched is not None and b.model is not None and sched.prefill is None  # CPU: none by default
    if prefill_on:
        sched.prefill = GroupPrefill(b.model, sched.pool, sched.sampler, b.kani2, groups=[1, 2, 4])
    spk = speakers or [None] * len(prompts)

    async def one(i: int, pr: list[int]) -> list[int]:
        out: list[int] = []
        sp = SamplingParams(seed=i, max_tokens=24, min_tokens=24, temperature=0.9, repetition_penalty=1.1,
                            speaker_embedding=spk[i])
        async for ids in b.stream(pr, sp):
            out += ids
        return out

    try:
        alone = await one(0, prompts[0])
        burst = await asyncio.gather(*(one(i, pr) for i, pr in enumerate(prompts)))  # 6 rows: chunks 4 + 2
    finally:
        await b.close()
    return [alone, *burst], sched.stats.graphed_prefills


def _unit(seed: int) -> tuple[float, ...]:
    e = torch.randn(128, generator=torch.Generator().manual_seed(seed))
    return tuple((e / e.norm()).tolist())


@pytest.mark.parametrize("kind", ["v1", "kanitts2"])
def test_the_padded_prefill_traces_as_one_graph_without_host_syncs(tiny_model, k2_model, kind):
    """What a CUDA graph needs of it, checked on the CPU: Dynamo traces the whole admission
    (prefill, state writes, sampling) as one graph, no break (a host sync would break it)."""
    import torch._dynamo

    from kanitts.engine.native.kanitts2 import load_native_model

    m, k2 = load_native_model(k2_model if kind == "kanitts2" else tiny_model, "cpu", torch.float32)
    pool = SlotPool(m, 8, MAX_LEN)
    gp = GroupPrefill(m, pool, Sampler(m, pool), None if k2 is None else k2.runtime(pool.size))
    gp._set_lengths(4, 32)
    torch._dynamo.reset()
    with torch.inference_mode():
        ex = torch._dynamo.explain(gp._forward)(4, 32)
    torch._dynamo.reset()
    assert (ex.graph_count, ex.graph_break_count) == (1, 0), ex.break_reasons


@pytest.mark.parametrize("kind", ["v1", "kanitts2"])
async def test_seeded_streams_are_the_same_with_the_bucketed_prefill_on_or_off(tiny_model, k2_model, kind):
    prompts = [[tk.START_OF_HUMAN, tk.START_OF_TEXT, *range(40, 44 + 3 * i), tk.END_OF_TEXT, tk.END_OF_HUMAN]
               for i in range(6)]
    path, speakers = tiny_model, None
    if kind == "kanitts2":
        path = k2_model
        speakers = [_unit(i) if i % 2 == 0 else None for i in range(6)]
    on, graphed = await _streams(path, True, prompts, speakers)
    off, eager = await _streams(path, False, prompts, speakers)
    assert graphed >= 2 and eager == 0
    assert on == off
    assert len({tuple(s) for s in on[1:]}) == len(prompts)  # the streams really differ


def test_the_admission_benchmark_measures_both_paths(tiny_model):
    from kanitts.bench.native_prefill import measure_admission

    rows = measure_admission(tiny_model, 64, device="cpu", dtype=torch.float32, groups=(1, 3), reps=2, warmup=1)
    cap, *meas = rows
    assert cap["step"] == "prefill_capture" and cap["graphs"] == 0  # graphs exist on CUDA only
    assert [(r["path"], r["group"]) for r in meas[:4]] == [("eager", 1), ("graphed", 1), ("eager", 3), ("graphed", 3)]
    assert len(meas) == 8 and all(r["first_token_ms_p50"] > 0 for r in meas)
    assert meas[-1]["graphed_prefills"] == 2 * 2 * 3  # 2 prompts x 2 groups x 3 runs
    assert all(r["same_first_tokens"] == 1.0 for r in meas if r["path"] == "graphed")  # float32 on the CPU
