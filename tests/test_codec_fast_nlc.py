"""FastStreamingDecoder: the channels-last walk computes the same function.

Checked on CPU against the one-shot decode, the reference ``StreamingDecoder`` and the
``ncl`` walk (:class:`kanitts.bench.codec_ncl.NclStreamingDecoder`), for the tiny codec (96 channels: stages of 12, 6 and 3 channels get padded)
and a small codec with the real last-stage channel counts (54 and 27, odd, padded to 56
and 32). The compiled ("ops") path runs on Inductor's CPU backend.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _codec_helpers import random_codes as _codes
from _codec_helpers import stream_chunks as _stream

from kanitts.bench.codec_ncl import NclStreamingDecoder, decoder_for_layout
from kanitts.codec.fast import FastStreamingDecoder
from kanitts.codec.walk_nlc import conv_nlc
from kanitts.codec.layers import CodecConfig, DecoderConfig
from kanitts.codec.nanocodec import NanoCodec
from kanitts.codec.streaming import StreamingDecoder
from kanitts.codec.tiny_nemo import randomize_codec, tiny_codec_config

TOL = 1e-5
CHUNKS = [1, 2, 3, 8, 1, 3]  # 18 frames


def _odd_config() -> CodecConfig:
    """Two stages of 54 and 27 channels (the real codec's last two), real resblocks."""
    return CodecConfig(
        samples_per_frame=6,
        decoder=DecoderConfig(up_sample_rates=(3, 2), base_channels=108),
    )


def _make(cfg: CodecConfig, seed: int) -> NanoCodec:
    model = NanoCodec(cfg)
    randomize_codec(model, seed)
    return model.eval()


@pytest.fixture(scope="module")
def tiny() -> NanoCodec:
    return _make(tiny_codec_config(False), 3)


@pytest.fixture(scope="module")
def odd() -> NanoCodec:
    return _make(_odd_config(), 5)


@pytest.fixture(params=["tiny", "odd"])
def codec(request: pytest.FixtureRequest) -> NanoCodec:
    return request.getfixturevalue(request.param)




def _nlc(codec: NanoCodec, n: int, **kw) -> FastStreamingDecoder:
    kw.setdefault("compile", False)
    return FastStreamingDecoder(codec, n, **kw)


def _padded_channels_are_zero(pool: FastStreamingDecoder) -> bool:
    """Every context's padded channels (beyond the layer's real input channels) are 0."""
    real = [c for c, _ in pool.decoder.context_shapes()]
    return all(bool((s[..., c:] == 0).all()) for s, c in zip(pool.states, real))


def test_conv_nlc_is_a_free_channels_last_view() -> None:
    g = torch.Generator().manual_seed(0)
    for b, t, cin, cout, k, d in [(3, 9, 56, 40, 3, 2), (1, 7, 16, 8, 7, 1), (2, 3, 32, 8, 3, 1), (4, 11, 8, 1, 3, 5)]:
        x = torch.randn(b, t, cin, generator=g)
        w = torch.randn(cout, cin, k, generator=g) / (cin * k) ** 0.5
        w4 = w.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        view = x.transpose(1, 2).unsqueeze(2)
        assert view.data_ptr() == x.data_ptr() and view.is_contiguous(memory_format=torch.channels_last)
        out4 = F.conv2d(view, w4, dilation=(1, d))
        out = out4.squeeze(2).transpose(1, 2)
        assert out.is_contiguous() and out.data_ptr() == out4.data_ptr()  # no copy needed
        got = conv_nlc(x, w4, dilation=d)
        want = F.conv1d(x.transpose(1, 2), w, dilation=d).transpose(1, 2)
        assert got.shape == (b, t - (k - 1) * d, cout)
        assert (got - want).abs().max() <= 1e-5


def test_layout_argument_and_stats(tiny: NanoCodec) -> None:
    assert FastStreamingDecoder(tiny, 2).stats()["layout"] == "nlc"  # the default
    assert decoder_for_layout(tiny, 2, layout=None).layout == "nlc"
    assert NclStreamingDecoder(tiny, 2).stats()["layout"] == "ncl"
    pool = _nlc(tiny, 2, pad_channels=8)
    st = pool.stats()
    assert st["layout"] == "nlc" and st["pad_channels"] == 8 and st["fused_ops"] is True
    # contexts are [slots + 1, L, C_padded]
    for s, (c, length) in zip(pool.states, tiny.decoder.context_shapes()):
        assert s.shape == (3, length, -(-c // 8) * 8)
    with pytest.raises(ValueError):
        decoder_for_layout(tiny, 2, layout="nhwc")
    with pytest.raises(ValueError):
        FastStreamingDecoder(tiny, 2, pad_channels=0)


@pytest.mark.parametrize("pad", [1, 8])
def test_matches_one_shot_reference_and_ncl(codec: NanoCodec, pad: int) -> None:
    codes = _codes(codec, 3, sum(CHUNKS), 0)
    one_shot = codec.decode(codes)
    slots = [5, 0, 2]
    got = _stream(_nlc(codec, 6, pad_channels=pad), slots, codes, CHUNKS)
    ref = _stream(StreamingDecoder(codec, 6), slots, codes, CHUNKS)
    ncl = _stream(NclStreamingDecoder(codec, 6, compile=False, fused_ops=True), slots, codes, CHUNKS)
    assert got.shape == one_shot.shape
    assert (got - one_shot).abs().max() <= TOL
    assert (got - ref).abs().max() <= TOL
    assert (got - ncl).abs().max() <= TOL
    assert one_shot.abs().max() > 0.1  # not a trivially silent codec


def test_pad_1_and_8_agree_and_padding_stays_zero(codec: NanoCodec) -> None:
    codes = _codes(codec, 2, 12, 1)
    p1, p8 = _nlc(codec, 2, pad_channels=1), _nlc(codec, 2, pad_channels=8)
    assert any(a.shape != b.shape for a, b in zip(p1.states, p8.states))  # padding happens
    a = _stream(p1, [0, 1], codes, [3, 1, 8])
    b = _stream(p8, [0, 1], codes, [3, 1, 8])
    assert (a - b).abs().max() <= 1e-6
    assert _padded_channels_are_zero(p8)
    for s1, s8 in zip(p1.states, p8.states):  # the real channels hold the same context
        assert (s1 - s8[..., : s1.shape[-1]]).abs().max() <= 1e-5


def test_slots_are_isolated_and_scratch_padding_is_harmless(codec: NanoCodec) -> None:
    fast = _nlc(codec, 4)
    a, b = _codes(codec, 1, 6, 1), _codes(codec, 1, 6, 2)
    fast.reset()
    fast.step_slots([1], a[..., :3].transpose(1, 2))
    before = [s[[0, 2, 3]].clone() for s in fast.states]
    fast.step_slots([3], b[..., :2].transpose(1, 2))  # only slot 3 changes
    fast.step_slots([1], a[..., 3:].transpose(1, 2))
    after = [s[[0, 2]] for s in fast.states]
    assert all(torch.equal(x[:2], y) for x, y in zip(before, after))
    # The graphed path pads a bucket with rows for the scratch slot: run that form here.
    scratch = fast.scratch
    index = torch.tensor([3, scratch, scratch])
    codes = torch.cat([b[..., 2:], _codes(codec, 2, 4, 7)])
    kept = [s[:scratch].clone() for s in fast.states]
    out = fast._fn(codes.transpose(1, 2), index, fast.states)
    assert (out[0] - codec.decode(b)[0, 2 * codec.samples_per_frame :]).abs().max() <= TOL
    for s, k in zip(fast.states, kept):  # slots other than 3 untouched by the padding rows
        assert torch.equal(s[[0, 1, 2]], k[[0, 1, 2]])
    # slot 1 still continues its own stream exactly
    fast.reset([1])
    assert (_stream(fast, [1], a, [2, 4]) - codec.decode(a)).abs().max() <= TOL


def test_whole_pool_step_with_mask_and_partial_reset(codec: NanoCodec) -> None:
    fast, ref = _nlc(codec, 3), StreamingDecoder(codec, 3)
    codes = _codes(codec, 3, 6, 5)
    mask = torch.tensor([True, False, True])
    for pool in (fast, ref):
        pool.reset()
    got, want = fast.step(codes[..., :2], mask), ref.step(codes[..., :2], mask)
    assert (got - want).abs().max() <= TOL and got[1].abs().max() == 0
    got, want = fast.step(codes[..., 2:4]), ref.step(codes[..., 2:4])
    assert (got - want).abs().max() <= TOL
    # restart slot 2 with a new stream; slots 0 and 1 go on with theirs
    for pool in (fast, ref):
        pool.reset([2])
    fresh = _codes(codec, 1, 2, 11)
    step = torch.cat([codes[:2, :, 4:6], fresh])
    got, want = fast.step(step), ref.step(step)
    assert (got - want).abs().max() <= TOL
    assert (got[2] - codec.decode(fresh)[0]).abs().max() <= TOL


def test_bf16_stays_close(codec: NanoCodec) -> None:
    codes = _codes(codec, 2, 6, 9)
    ref = codec.decode(codes)
    nlc = _stream(_nlc(codec, 2, dtype=torch.bfloat16), [0, 1], codes, [2, 4]).float()
    ncl = NclStreamingDecoder(codec, 2, dtype=torch.bfloat16, compile=False, fused_ops=True)
    ncl_out = _stream(ncl, [0, 1], codes, [2, 4]).float()
    assert torch.isfinite(nlc).all()
    err = float((nlc - ref).norm() / ref.norm())
    assert err < 0.1  # random-weight codec
    assert err < 2 * float((ncl_out - ref).norm() / ref.norm()) + 0.01  # no worse than ncl
    assert codec.dtype == torch.float32  # the caller's codec is not converted


def test_compiled_ops_cpu(odd: NanoCodec) -> None:
    """compile="ops" on Inductor's CPU backend: same audio, and the pointwise functions
    compile per channel count / pattern, not per batch or chunk size."""
    pytest.importorskip("torch._inductor")
    from torch._dynamo.utils import counters

    codes = _codes(odd, 3, 12, 4)
    one_shot = odd.decode(codes)
    pool = _nlc(odd, 6, compile="ops")
    assert pool.stats()["ops_compiled"] is True and pool.buckets[0] == 2
    start = counters["stats"]["unique_graphs"]
    got = _stream(pool, [5, 0, 2], codes, [2, 3, 7])
    assert (got - one_shot).abs().max() <= TOL
    first = counters["stats"]["unique_graphs"] - start
    # 5 functions x (54 / 27 channels, 108 at the input, the total=None variants)
    assert 0 < first <= 16, first
    got = _stream(pool, [1, 4], codes[:2], [4, 2, 6])  # other B and T: no recompiles
    assert (got - one_shot[:2]).abs().max() <= TOL
    assert counters["stats"]["unique_graphs"] - start == first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("pad", [1, 8])
def test_cuda_graphs_ops_nlc(pad: int) -> None:
    gpu = _make(_odd_config(), 5).to("cuda")
    codes = _codes(gpu, 3, 13, 6).cuda()
    fast = FastStreamingDecoder(gpu, 8, compile="ops", pad_channels=pad)
    got = _stream(fast, [7, 2, 4], codes, [1, 2, 8, 2])  # bucket 4, 2 -> split
    torch.cuda.synchronize()
    assert fast.stats()["cuda_graphs"] and fast.stats()["graphs"]
    assert (got - gpu.decode(codes)).abs().max() <= 1e-4


def test_cudnn_autotune_is_scoped() -> None:
    """Autotuning is switched on only inside the codec's own calls and restored after,
    even when the block raises."""
    from kanitts.codec.fast import cudnn_autotune

    before = torch.backends.cudnn.benchmark
    with cudnn_autotune():
        assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.benchmark == before
    with pytest.raises(RuntimeError), cudnn_autotune():
        raise RuntimeError("boom")
    assert torch.backends.cudnn.benchmark == before
    with cudnn_autotune(False):
        assert torch.backends.cudnn.benchmark == before
