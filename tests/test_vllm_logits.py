"""CPU tests of codebook-restricted decoding (no vLLM needed)."""
from types import SimpleNamespace

import torch

from kanitts.engine.vllm_logits import (
    NUM_CANDIDATES,
    KaniCodebookLogitsProcessor,
    allowed_after,
    allowed_token_ids,
    candidate_layout,
    counter_uniform,
    gather_candidates,
    sample_candidates,
)
from kanitts.tokens import (
    AUDIO_TOKEN_START,
    CODEBOOK_SIZE,
    END_OF_AI,
    END_OF_HUMAN,
    END_OF_SPEECH,
    END_OF_TEXT,
    MODEL_VOCAB_SIZE,
    START_OF_AI,
    START_OF_SPEECH,
    FrameParser,
    audio_token,
)

V = MODEL_VOCAB_SIZE


def test_allowed_state_machine():
    assert allowed_after(END_OF_HUMAN).ids() == [START_OF_AI, START_OF_SPEECH]
    assert allowed_after(None).extra == (START_OF_AI, START_OF_SPEECH)
    assert allowed_after(START_OF_AI).ids() == [START_OF_SPEECH]
    a = allowed_after(START_OF_SPEECH)
    assert (a.lo, a.hi, a.extra) == (AUDIO_TOKEN_START, AUDIO_TOKEN_START + CODEBOOK_SIZE, ())
    for k in range(3):
        a = allowed_after(audio_token(k, 17))
        assert a.lo == audio_token(k + 1, 0) and a.hi == a.lo + CODEBOOK_SIZE and a.extra == ()
    a = allowed_after(audio_token(3, 4031))
    assert a.lo == AUDIO_TOKEN_START and a.extra == (END_OF_SPEECH,)
    assert END_OF_SPEECH in a and END_OF_AI not in a and END_OF_TEXT not in a
    assert allowed_after(END_OF_SPEECH).ids() == [END_OF_AI]


def test_allowed_token_ids_uses_prompt_then_generated():
    assert allowed_token_ids([1, END_OF_HUMAN], []).extra == (START_OF_AI, START_OF_SPEECH)
    # templates that end with START_OF_SPEECH start directly with codebook 0
    assert allowed_token_ids([1, START_OF_AI, START_OF_SPEECH], []).lo == AUDIO_TOKEN_START
    assert allowed_token_ids([1], [START_OF_AI, START_OF_SPEECH, audio_token(0, 1)]).lo == audio_token(1, 0)


def test_vectorised_layout_matches_pure_function():
    lasts = [-1, 0, 5, END_OF_HUMAN, START_OF_AI, START_OF_SPEECH, END_OF_SPEECH, END_OF_AI, 64408,
             *[audio_token(k, c) for k in range(4) for c in (0, 1, 4031)]]
    lo, e1, e2 = candidate_layout(torch.tensor(lasts))
    for i, t in enumerate(lasts):
        a = allowed_after(t if t >= 0 else None)
        got_lo = int(lo[i])
        assert (got_lo if got_lo >= 0 else 0) == a.lo
        assert tuple(int(x) for x in (e1[i], e2[i]) if x >= 0) == a.extra


def test_gather_candidates():
    logits = torch.randn(3, V)
    rows = torch.tensor([0, 2])
    last = torch.tensor([audio_token(0, 5), END_OF_HUMAN])
    cand, ids = gather_candidates(logits, rows, last)
    assert cand.shape == (2, NUM_CANDIDATES)
    assert torch.equal(cand[0, :CODEBOOK_SIZE], logits[0, audio_token(1, 0):audio_token(1, 0) + CODEBOOK_SIZE])
    assert torch.isneginf(cand[0, CODEBOOK_SIZE:]).all()
    assert torch.isneginf(cand[1, :CODEBOOK_SIZE]).all()
    assert cand[1, CODEBOOK_SIZE] == logits[2, START_OF_AI] and cand[1, CODEBOOK_SIZE + 1] == logits[2, START_OF_SPEECH]
    assert ids[1, CODEBOOK_SIZE] == START_OF_AI and (ids[1, :CODEBOOK_SIZE] == -1).all()


def test_counter_uniform_deterministic_and_spread():
    s, t = torch.tensor([1, 1, 2]), torch.tensor([0, 1, 0])
    u = counter_uniform(s, t, 4096)
    assert torch.equal(u, counter_uniform(s, t, 4096))
    assert (u > 0).all() and (u < 1).all()
    assert not torch.equal(u[0], u[1]) and not torch.equal(u[0], u[2])
    assert abs(float(u.mean()) - 0.5) < 0.02


def _params(n, temp=0.6, top_p=0.95, rep=1.1):
    f = lambda v: torch.full((n,), v)  # noqa: E731
    return f(temp), f(top_p), f(rep)


def test_sample_candidates_respects_mask_topp_greedy():
    torch.manual_seed(0)
    cand = torch.randn(64, 100)
    cand[:, 50:] = float("-inf")
    t, p, r = _params(64)
    col = sample_candidates(cand, None, t, p, r, torch.arange(64), torch.zeros(64, dtype=torch.long))
    assert (col < 50).all()
    # top_p tiny -> argmax; temperature 0 -> argmax
    t2, p2, _ = _params(64, top_p=1e-6)
    c2 = sample_candidates(cand, None, t2, p2, r, torch.arange(64), torch.zeros(64, dtype=torch.long))
    assert torch.equal(c2, cand.argmax(1))
    t3, _, _ = _params(64, temp=0.0)
    c3 = sample_candidates(cand, None, t3, p, r, torch.arange(64), torch.zeros(64, dtype=torch.long))
    assert torch.equal(c3, cand.argmax(1))


def test_sample_candidates_distribution_and_seed():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).repeat(4000, 1)
    t, p, r = _params(4000, temp=1.0, top_p=1.0, rep=1.0)
    col = sample_candidates(logits, None, t, p, r, torch.arange(4000), torch.zeros(4000, dtype=torch.long))
    freq = torch.bincount(col, minlength=3).float() / 4000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2]), atol=0.03)
    col2 = sample_candidates(logits, None, t, p, r, torch.arange(4000), torch.zeros(4000, dtype=torch.long))
    assert torch.equal(col, col2)
    # top_p 0.7 keeps the first two only
    t, p, r = _params(4000, temp=1.0, top_p=0.7, rep=1.0)
    col = sample_candidates(logits, None, t, p, r, torch.arange(4000), torch.zeros(4000, dtype=torch.long))
    assert set(col.tolist()) == {0, 1}


def test_repetition_penalty_vllm_semantics():
    cand = torch.tensor([[2.0, 1.9, -1.0, -1.05]])
    seen = torch.tensor([[True, False, True, False]])
    t, p, r = _params(1, temp=0.0, rep=1.5)
    # 2.0 / 1.5 = 1.33 < 1.9 -> column 1
    assert int(sample_candidates(cand, seen, t, p, r, torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))) == 1


def test_dead_row_does_not_crash():
    cand = torch.full((2, 5), float("-inf"))
    cand[1, 3] = 1.0
    t, p, r = _params(2)
    col = sample_candidates(cand, None, t, p, r, torch.arange(2), torch.zeros(2, dtype=torch.long))
    assert col.tolist() == [0, 3]


# ---------------------------------------------------------------- the processor with a fake batch
def _sp(mode="sample", seed=None, temp=0.6):
    return SimpleNamespace(extra_args={"kanitts": {"mode": mode, "temperature": temp, "top_p": 0.95,
                                                    "repetition_penalty": 1.1, "seed": seed}})


def _upd(batch_size, removed=(), added=(), moved=()):
    return SimpleNamespace(batch_size=batch_size, removed=list(removed), added=list(added), moved=list(moved))


def _proc(max_seqs=8):
    cfg = SimpleNamespace(scheduler_config=SimpleNamespace(max_num_seqs=max_seqs))
    return KaniCodebookLogitsProcessor(cfg, torch.device("cpu"), False)


def _step(proc, outs, batch):
    logits = torch.randn(batch, V)
    res = proc.apply(logits)
    picks = res.argmax(1).tolist()
    for i, o in enumerate(outs):
        if o is not None:
            o.append(picks[i])
    return res, picks


def test_processor_generates_valid_frames_for_many_rows():
    proc = _proc()
    prompt = [1, 5, END_OF_TEXT, END_OF_HUMAN]
    outs = [[] for _ in range(4)]
    proc.update_state(_upd(5, added=[(i, _sp(seed=i), prompt, outs[i]) for i in range(4)]))
    outs.append(None)  # row 4: not ours (no extra_args) -> untouched
    proc.update_state(_upd(5, added=[(4, SimpleNamespace(extra_args=None), prompt, [])]))
    for _ in range(2 + 4 * 10):
        res, _ = _step(proc, outs, 5)
    assert not torch.isneginf(res[4]).any()  # unconstrained row left alone
    for o in outs[:4]:
        assert o[:2] == [START_OF_AI, START_OF_SPEECH] or o[0] == START_OF_SPEECH
        fp = FrameParser()
        frames = fp.feed(o)
        assert len(frames) >= 9


def test_processor_seed_reproduces_and_differs():
    def run(seed):
        proc = _proc()
        out = []
        proc.update_state(_upd(1, added=[(0, _sp(seed=seed), [END_OF_HUMAN], out)]))
        torch.manual_seed(123)  # same logits
        for _ in range(20):
            _step(proc, [out], 1)
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_processor_mask_mode():
    proc = _proc()
    out = [START_OF_AI, START_OF_SPEECH, audio_token(0, 3)]
    proc.update_state(_upd(1, added=[(0, _sp(mode="mask"), [END_OF_HUMAN], out)]))
    logits = torch.randn(1, V)
    res = proc.apply(logits.clone())
    finite = torch.isfinite(res[0]).nonzero().squeeze(1)
    lo = audio_token(1, 0)
    assert finite.tolist() == list(range(lo, lo + CODEBOOK_SIZE))
    assert torch.equal(res[0, lo:lo + CODEBOOK_SIZE], logits[0, lo:lo + CODEBOOK_SIZE])


def test_processor_moves_swaps_removes_and_penalty_state():
    proc = _proc()
    a = [START_OF_AI, START_OF_SPEECH, audio_token(0, 9)]
    b = [START_OF_AI]
    proc.update_state(_upd(2, added=[(0, _sp(seed=1), [END_OF_HUMAN], a), (1, _sp(seed=2), [END_OF_HUMAN], b)]))
    proc.apply(torch.randn(2, V))
    assert proc.seen[0, audio_token(0, 9) - 64400] and not proc.seen[1, audio_token(0, 9) - 64400]
    # swap 0 <-> 1
    proc.update_state(_upd(2, moved=[(0, 1, SimpleNamespace(name="SWAP"))]))
    assert proc.rows[1].out is a and proc.rows[0].out is b
    assert proc.seen[1, audio_token(0, 9) - 64400] and not proc.seen[0, audio_token(0, 9) - 64400]
    res = proc.apply(torch.randn(2, V))
    assert int(res[0].argmax()) == START_OF_SPEECH  # b: after START_OF_AI
    assert audio_token(1, 0) <= int(res[1].argmax()) < audio_token(2, 0)
    # remove row 0, move 1 -> 0 (condense)
    proc.update_state(_upd(1, removed=[0], moved=[(1, 0, SimpleNamespace(name="UNIDIRECTIONAL"))]))
    assert proc.rows[0].out is a and proc.rows[1] is None
    res = proc.apply(torch.randn(1, V))
    assert audio_token(1, 0) <= int(res[0].argmax()) < audio_token(2, 0)


def test_processor_respects_min_tokens_mask_on_eos():
    # vLLM's min-tokens processor runs first and puts -inf on stop ids: never pick END_OF_SPEECH
    proc = _proc()
    out = [START_OF_AI, START_OF_SPEECH, *[audio_token(k, 1) for k in range(4)]]
    proc.update_state(_upd(1, added=[(0, _sp(temp=0.0), [END_OF_HUMAN], out)]))
    logits = torch.randn(1, V)
    logits[0, END_OF_SPEECH] = 1e4
    assert int(proc.apply(logits.clone()).argmax()) == END_OF_SPEECH
    logits[0, END_OF_SPEECH] = float("-inf")
    assert AUDIO_TOKEN_START <= int(proc.apply(logits.clone()).argmax()) < audio_token(1, 0)


# ------------------------------------------- GPU-resident state: placeholders, discards, re-adds
def _old_proc(max_seqs=8):
    from kanitts.bench import round1_logits as mod

    cfg = SimpleNamespace(scheduler_config=SimpleNamespace(max_num_seqs=max_seqs))
    return mod, mod.KaniCodebookLogitsProcessor(cfg, torch.device("cpu"), False)


def _sp_old(seed):
    return SimpleNamespace(extra_args={"kanitts_old": {"mode": "sample", "temperature": 0.6, "top_p": 0.95,
                                                        "repetition_penalty": 1.1, "seed": seed}})


def test_new_processor_picks_same_tokens_as_round1_with_placeholders():
    """The new processor sees only -1 placeholders (vLLM async scheduling without the sync);
    the round-1 processor sees real ids. Same seeds + logits -> the same tokens."""
    _, old = _old_proc()
    new = _proc()
    prompts = [[1, 5, END_OF_TEXT, END_OF_HUMAN], [1, 7, END_OF_HUMAN, START_OF_AI, START_OF_SPEECH], [9]]
    o_out, n_out, n_real = [[] for _ in prompts], [[] for _ in prompts], [[] for _ in prompts]
    old.update_state(_upd(3, added=[(i, _sp_old(i), pr, o_out[i]) for i, pr in enumerate(prompts)]))
    new.update_state(_upd(3, added=[(i, _sp(seed=i), pr, n_out[i]) for i, pr in enumerate(prompts)]))
    g = torch.Generator().manual_seed(5)
    for _ in range(70):
        logits = torch.randn(3, V, generator=g) * 3
        po = old.apply(logits.clone()).argmax(1).tolist()
        pn = new.apply(logits.clone()).argmax(1).tolist()
        assert po == pn
        for i in range(3):
            o_out[i].append(po[i])
            n_out[i].append(-1)  # placeholder only
            n_real[i].append(pn[i])
    for i in range(3):
        assert FrameParser().feed(n_real[i])
    # the prompt that ends with START_OF_SPEECH starts directly with codebook 0
    assert AUDIO_TOKEN_START <= n_real[1][0] < audio_token(1, 0)


def test_discarded_sample_of_chunked_prefill_is_dropped():
    """A row in chunked prefill gets logits but vLLM discards the sample (no placeholder)."""
    new = _proc()
    out = []
    new.update_state(_upd(1, added=[(0, _sp(seed=3, temp=0.0), [1, END_OF_HUMAN], out)]))
    logits = torch.randn(1, V)
    logits[0, START_OF_SPEECH] = 50.0  # greedy would take START_OF_SPEECH...
    assert int(new.apply(logits.clone()).argmax()) == START_OF_SPEECH
    # ...but that step was a prefill chunk: discarded, nothing appended. Same state again:
    logits2 = torch.randn(1, V)
    logits2[0, START_OF_AI] = 50.0
    assert int(new.apply(logits2.clone()).argmax()) == START_OF_AI
    out.append(-1)  # accepted
    logits3 = torch.randn(1, V)
    logits3[0, START_OF_AI] = 60.0
    # after START_OF_AI only START_OF_SPEECH is valid
    assert int(new.apply(logits3.clone()).argmax()) == START_OF_SPEECH
    assert 0 not in new.young


def test_readded_row_rebuilds_state_from_real_ids():
    new = _proc()
    out = [START_OF_AI, START_OF_SPEECH, audio_token(0, 5), audio_token(1, 6)]
    new.update_state(_upd(2, added=[(1, _sp(seed=1), [END_OF_HUMAN], out)]))
    res = new.apply(torch.randn(2, V))
    assert audio_token(2, 0) <= int(res[1].argmax()) < audio_token(3, 0)
    assert bool(new.seen[1, audio_token(1, 6) - 64400]) and bool(new.seen[1, START_OF_SPEECH - 64400])
    assert int(new.step[1]) == 4


def test_needs_output_token_ids_only_for_mask_rows():
    new = _proc()
    assert not new.needs_output_token_ids()
    new.update_state(_upd(1, added=[(0, _sp(), [END_OF_HUMAN], [])]))
    assert not new.needs_output_token_ids()
    new.update_state(_upd(2, added=[(1, _sp(mode="mask"), [END_OF_HUMAN], [])]))
    assert new.needs_output_token_ids()
    new.update_state(_upd(1, removed=[1]))
    assert not new.needs_output_token_ids()


def test_patch_flag_is_or_of_processors(monkeypatch):
    """The InputBatch wrapper: vLLM's flag becomes the OR of the custom processors' needs."""
    import sys
    import types

    import kanitts.engine.vllm_logits as lp

    class IB:
        def __init__(self, procs):
            self.logitsprocs = SimpleNamespace(all=procs)
            self.logitsprocs_need_output_token_ids = True

        def _make_sampling_metadata(self):
            return self.logitsprocs_need_output_token_ids

    mods = {"vllm": types.ModuleType("vllm"), "vllm.v1": types.ModuleType("vllm.v1"),
            "vllm.v1.worker": types.ModuleType("vllm.v1.worker"),
            "vllm.v1.worker.gpu_input_batch": types.ModuleType("vllm.v1.worker.gpu_input_batch")}
    mods["vllm.v1.worker.gpu_input_batch"].InputBatch = IB
    mods["vllm.v1.worker"].gpu_input_batch = mods["vllm.v1.worker.gpu_input_batch"]
    for k, v in mods.items():
        monkeypatch.setitem(sys.modules, k, v)
    monkeypatch.setattr(lp, "_PATCHED", False)
    assert lp.patch_vllm_output_token_sync()
    new = _proc()
    assert IB([new])._make_sampling_metadata() is False
    new.n_mask = 1
    assert IB([new])._make_sampling_metadata() is True
    new.n_mask = 0
    assert IB([new, object()])._make_sampling_metadata() is True  # unknown processor: conservative


def test_layout_table_matches_state_machine():
    from kanitts.engine.vllm_logits import _NO_BLOCK, layout_table

    t = layout_table()
    for last in [-1, 0, 5, END_OF_HUMAN, START_OF_AI, START_OF_SPEECH, END_OF_SPEECH, END_OF_AI, 64408,
                 audio_token(0, 0), audio_token(3, 4031), 80538, V]:
        lo, e1, e2 = (int(x) for x in t[last + 1])
        a = allowed_after(last if last >= 0 else None)
        assert (lo if lo != _NO_BLOCK else 0) == a.lo
        assert tuple(x for x in (e1, e2) if x >= 0) == a.extra
