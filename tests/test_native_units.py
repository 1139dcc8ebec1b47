"""CPU seams of the native engine: buckets, the slot pool, and the sampler's semantics."""

from __future__ import annotations

import types

import pytest
import torch
from _reference_sampler import SpeechConstraint, sample_next

from kanitts import tokens as p
from kanitts.engine.base import SamplingParams
from kanitts.engine.native.graphs import bucket_sizes, length_buckets, pick_bucket
from kanitts.engine.native.sampler import HEAD_HI, HEAD_LO, Sampler
from kanitts.engine.native.slots import SlotParams, SlotPool
from kanitts.engine.native.spec import Lfm2Spec

V = p.MODEL_VOCAB_SIZE


def test_buckets():
    assert bucket_sizes(1) == [1]
    assert bucket_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert bucket_sizes(100) == [1, 2, 4, 8, 16, 32, 64, 100]
    assert length_buckets(2048) == [256, 512, 1024, 2048]
    assert length_buckets(300) == [256, 300] and length_buckets(64) == [64]
    sizes = bucket_sizes(100)
    assert [pick_bucket(n, sizes) for n in (1, 3, 64, 65, 100)] == [1, 4, 64, 100, 100]
    with pytest.raises(ValueError):
        pick_bucket(101, sizes)
    with pytest.raises(ValueError):
        bucket_sizes(0)


class FakeModel:
    """What the pool and sampler need of an Lfm2: spec, device, dtype and a head."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.spec = Lfm2Spec(vocab_size=V, hidden_size=4, intermediate_size=8, num_layers=1, num_heads=1,
                             num_kv_heads=1, head_dim=4, attn_layers=(0,))
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self._logits = logits  # [R, V]

    def logits(self, hidden: torch.Tensor, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        return self._logits[:, lo:hi]


def params(prompt, **kw) -> SlotParams:
    sp = SamplingParams(**kw)
    return SlotParams(prompt=prompt, temperature=sp.temperature, top_p=sp.top_p,
                      repetition_penalty=sp.repetition_penalty, seed=sp.seed or 0, min_tokens=sp.min_tokens,
                      constrained=sp.constrained, stop_ids=sp.stop_token_ids)


def test_pool_hands_out_the_lowest_free_slot():
    pool = SlotPool(FakeModel(torch.zeros(1, V)), 4, 16)
    assert [pool.take() for _ in range(3)] == [0, 1, 2] and pool.bound() == 3
    pool.release(1)
    assert pool.bound() == 3 and pool.take() == 1
    pool.release(2)
    assert pool.bound() == 2 and pool.free_count == 2
    pool.admit([0], [params([5, 6, p.START_OF_SPEECH], seed=9, min_tokens=3)])
    assert pool.seen[0, [5, 6, p.START_OF_SPEECH]].all() and int(pool.seen[0].sum()) == 3
    assert int(pool.seed[0]) == 9 and int(pool.min_tokens[0]) == 3 and bool(pool.active[0])


#: last token -> what the constraint allows (states of the speech state machine)
LASTS = [p.END_OF_HUMAN, p.START_OF_AI, p.START_OF_SPEECH, p.audio_token(0, 7), p.audio_token(2, 1),
         p.audio_token(3, 5)]


@pytest.mark.parametrize("allow_stop", [True, False])
def test_greedy_restricted_sampling_equals_the_reference_sampler(allow_stop):
    """Same logits, same history: the codebook-only sampler picks what ``sample_next`` (over
    the whole vocabulary with the speech constraint) picks, repetition penalty included."""
    g = torch.Generator().manual_seed(0)
    R = len(LASTS)
    logits = torch.randn(R, V, generator=g)
    model = FakeModel(logits)
    pool = SlotPool(model, R, 8)
    history = [[3, 4, last] for last in LASTS]
    for r, last in enumerate(LASTS):  # make the penalty decide: boost an already seen id
        c = p.audio_token(((last - p.AUDIO_TOKEN_START) // p.CODEBOOK_SIZE + 1) % 4, 11) \
            if last >= p.AUDIO_TOKEN_START else p.START_OF_SPEECH
        history[r].append(c)
        logits[r, c] = logits[r].max() + 0.05
    sp = SamplingParams(temperature=0.0, repetition_penalty=1.3, min_tokens=0 if allow_stop else 5)
    pool.admit(list(range(R)), [params(h, temperature=0.0, repetition_penalty=1.3, min_tokens=sp.min_tokens)
                                for h in history])
    pool.tok.copy_(torch.tensor(LASTS))
    got = Sampler(model, pool).sample(torch.zeros(R, 4), torch.arange(R), False).tolist()
    for r, last in enumerate(LASTS):
        cons = SpeechConstraint.for_prompt([last])
        if last >= p.AUDIO_TOKEN_START:
            cons.state, cons.position = cons.SPEECH, ((last - p.AUDIO_TOKEN_START) // p.CODEBOOK_SIZE + 1) % 4
        want = sample_next(logits[r], sp, torch.tensor(history[r]), cons, allow_stop, None)
        assert got[r] == want, (r, last)
    assert (pool.gen[:R] == 1).all() and pool.tok[:R].tolist() == got


def test_restricted_head_covers_every_valid_id_and_unconstrained_rows_use_the_full_head():
    assert HEAD_LO <= min(p.START_OF_AI, p.START_OF_SPEECH, p.END_OF_SPEECH) and HEAD_HI == p.AUDIO_TOKEN_END
    logits = torch.full((2, V), -5.0)
    logits[:, 17] = 50.0  # a text token: only an unconstrained row may pick it
    model = FakeModel(logits)
    pool = SlotPool(model, 2, 8)
    pool.admit([0, 1], [params([1, p.START_OF_SPEECH], temperature=0.0),
                        params([1, p.START_OF_SPEECH], temperature=0.0, constrained=False)])
    pool.tok.fill_(p.START_OF_SPEECH)
    got = Sampler(model, pool).sample(torch.zeros(2, 4), slice(0, 2), True).tolist()
    assert p.AUDIO_TOKEN_START <= got[0] < p.AUDIO_TOKEN_START + p.CODEBOOK_SIZE and got[1] == 17


def test_seeded_samples_do_not_depend_on_the_row():
    """The RNG is keyed by (seed, tokens sampled so far), not by the slot or the batch."""
    g = torch.Generator().manual_seed(1)
    row = torch.randn(1, V, generator=g)
    model = FakeModel(row.expand(8, V).clone())
    pool = SlotPool(model, 8, 8)
    pool.admit(list(range(8)), [params([1, p.START_OF_SPEECH], seed=42 if r in (2, 6) else r, temperature=1.0,
                                       top_p=0.9) for r in range(8)])
    pool.tok.fill_(p.START_OF_SPEECH)
    got = Sampler(model, pool).sample(torch.zeros(8, 4), slice(0, 8), False).tolist()
    assert got[2] == got[6] and len(set(got)) > 2


def test_the_engine_imports_without_server_or_transformers_packages():
    """The device image lacks the server's packages: the engine needs torch + safetensors only."""
    import subprocess
    import sys

    blocked = ("fastapi", "starlette", "uvicorn", "av", "lingua", "httpx", "transformers", "tokenizers")
    code = ("import sys\n"
            f"for m in {blocked!r}: sys.modules[m] = None\n"
            "import kanitts.engine.native.backend, kanitts.engine.native.weights\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def test_the_sampling_hash_is_the_plain_32_bit_murmur_finalizer():
    """counter_uniform avoids int64 overflow and constants in [2**31, 2**32) (Inductor's C++ and
    Triton code) but must give the bits of the plain masked formulation, for any int64 seed."""
    from kanitts.engine.codebook_constraint import counter_uniform

    m = 0xFFFFFFFF

    def fmix(h):
        h = h ^ (h >> 16)
        h = (h * 0x85EBCA6B) & m
        h = h ^ (h >> 13)
        h = (h * 0xC2B2AE35) & m
        return h ^ (h >> 16)

    def plain(seed, step, n):
        s = fmix((seed & m) ^ 0x5BD1E995)
        base = (s * 0x9E3779B1 + (step & m) * 0x85EBCA77) & m
        h = fmix((base[:, None] + torch.arange(n)[None, :] * 0xC2B2AE3D) & m)
        h = fmix(h ^ s[:, None])
        return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))

    g = torch.Generator().manual_seed(0)
    seed = torch.cat([torch.randint(-2**62, 2**62, (100,), generator=g),
                      torch.tensor([0, 1, 2**31 - 1, -1, 2**32 - 1, 2**32, -2**63])])
    step = torch.randint(0, 2**40, (seed.numel(),), generator=g)
    assert torch.equal(counter_uniform(seed, step, 5000), plain(seed, step, 5000))
