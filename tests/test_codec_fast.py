"""FastStreamingDecoder (kanitts.codec.fast): same function as the reference decoder.

CPU runs the eager path and the fused forms (single-expression half-snake, pointwise
transposed conv) eagerly; compilation and CUDA graphs are checked on CUDA only
(KANITTS_TEST_COMPILE=1 also compiles on CPU, which takes minutes)."""

from __future__ import annotations

import os

import pytest
import torch
from _codec_helpers import random_codes as _codes
from _codec_helpers import stream_chunks as _stream

from kanitts.bench.codec_ncl import NclStreamingDecoder
from kanitts.codec.fast import FastStreamingDecoder, default_buckets, split_frames
from kanitts.codec.nanocodec import NanoCodec
from kanitts.codec.streaming import StreamingDecoder
from kanitts.codec.tiny_nemo import randomize_codec, tiny_codec_config


@pytest.fixture(scope="module")
def codec() -> NanoCodec:
    model = NanoCodec(tiny_codec_config(False))
    randomize_codec(model, 3)
    return model.eval()




def test_helpers() -> None:
    assert default_buckets(1) == (1,)
    assert default_buckets(5) == (1, 2, 4, 5)
    assert default_buckets(8, 2) == (2, 4, 8)
    assert split_frames(7, (1, 2, 4, 8)) == [4, 2, 1]
    assert split_frames(16, (1, 2, 4, 8)) == [8, 8]
    with pytest.raises(ValueError):
        split_frames(3, (2,))


def test_cpu_defaults_are_eager(codec: NanoCodec) -> None:
    pool = FastStreamingDecoder(codec, 4)
    assert pool.stats()["compiled"] is False and pool.stats()["cuda_graphs"] is False
    assert pool.stats()["layout"] == "nlc"  # the default; tests/test_codec_fast_nlc.py covers it
    assert pool.stream is None


@pytest.mark.parametrize("fused", [False, True])
def test_matches_one_shot_and_reference_pool(codec: NanoCodec, fused: bool) -> None:
    codes = _codes(codec, 3, 11, 0)
    one_shot = codec.decode(codes)
    fast = NclStreamingDecoder(codec, 6, compile=False, fused_ops=fused)
    ref = StreamingDecoder(codec, 6)
    slots = [5, 0, 2]
    got = _stream(fast, slots, codes, [1, 2, 4, 3, 1])
    want = _stream(ref, slots, codes, [1, 2, 4, 3, 1])
    tol = 1e-5
    assert (got - one_shot).abs().max() <= tol
    assert (got - want).abs().max() <= (tol if fused else 0.0)


def test_slots_are_isolated_and_scratch_padding_is_harmless(codec: NanoCodec) -> None:
    fast = NclStreamingDecoder(codec, 4, compile=False, fused_ops=True)
    a, b = _codes(codec, 1, 6, 1), _codes(codec, 1, 6, 2)
    fast.reset()
    fast.step_slots([1], a[..., :3].transpose(1, 2))
    before = [s[[0, 2, 3]].clone() for s in fast.states]
    fast.step_slots([3], b[..., :2].transpose(1, 2))  # only slot 3 changes
    fast.step_slots([1], a[..., 3:].transpose(1, 2))
    out_b = fast.step_slots([3], b[..., 2:].transpose(1, 2))
    assert (out_b - codec.decode(b)[:, 2 * codec.samples_per_frame :]).abs().max() <= 1e-5
    after = [s[[0, 2]] for s in fast.states]
    assert all(torch.equal(x[:2], y) for x, y in zip(before, after))


def test_whole_pool_step_with_mask(codec: NanoCodec) -> None:
    fast = NclStreamingDecoder(codec, 3, compile=False, fused_ops=True)
    ref = StreamingDecoder(codec, 3)
    codes = _codes(codec, 3, 4, 5)
    mask = torch.tensor([True, False, True])
    for pool in (fast, ref):
        pool.reset()
    got = fast.step(codes[..., :2], mask)
    want = ref.step(codes[..., :2], mask)
    assert (got - want).abs().max() <= 1e-5
    assert got[1].abs().max() == 0
    got = fast.step(codes[..., 2:])
    want = ref.step(codes[..., 2:])
    assert (got - want).abs().max() <= 1e-5


def test_input_validation(codec: NanoCodec) -> None:
    fast = NclStreamingDecoder(codec, 2, compile=False)
    with pytest.raises(ValueError):
        fast.step_slots([0], _codes(codec, 2, 1, 0).transpose(1, 2))
    with pytest.raises(ValueError):
        fast.step_slots([2], _codes(codec, 1, 1, 0).transpose(1, 2))
    with pytest.raises(ValueError):
        fast.step_slots([0], _codes(codec, 1, 1, 0)[..., :0].transpose(1, 2))
    with pytest.raises(ValueError):
        NclStreamingDecoder(codec, 0)


def test_bf16_stays_close(codec: NanoCodec) -> None:
    codes = _codes(codec, 2, 6, 9)
    ref = codec.decode(codes)
    fast = NclStreamingDecoder(codec, 2, dtype=torch.bfloat16, compile=False, fused_ops=True)
    got = _stream(fast, [0, 1], codes, [2, 4]).float()
    assert torch.isfinite(got).all()
    assert float((got - ref).norm() / ref.norm()) < 0.1  # random-weight tiny codec
    assert codec.dtype == torch.float32  # the caller's codec is not converted


@pytest.mark.skipif(os.environ.get("KANITTS_TEST_COMPILE") != "1", reason="compile on CPU takes minutes")
def test_compiled_cpu(codec: NanoCodec) -> None:
    codes = _codes(codec, 3, 7, 4)
    fast = NclStreamingDecoder(codec, 4, compile=True)
    got = _stream(fast, [1, 3, 0], codes, [2, 2, 3])
    assert (got - codec.decode(codes)).abs().max() <= 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_compiled(codec: NanoCodec) -> None:
    gpu = codec.to("cuda")
    codes = _codes(codec, 3, 13, 6).cuda()
    fast = FastStreamingDecoder(gpu, 8, frame_sizes=(1, 2, 4, 8))
    got = _stream(fast, [7, 2, 4], codes, [1, 2, 8, 2])  # bucket 4, 2 -> split
    torch.cuda.synchronize()
    assert fast.stats()["cuda_graphs"] and fast.stats()["graphs"]
    assert (got - gpu.decode(codes)).abs().max() <= 1e-4
