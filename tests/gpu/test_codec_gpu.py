"""GPU checks of the capped codec pool (run on the device; skipped without CUDA): the
graphed, capped plan decodes what the eager pool does, warm-up captures exactly the shapes
a step can use, and the cap bounds the memory a step's graphs take."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

from kanitts.codec.fast import FastStreamingDecoder
from kanitts.codec.nanocodec import NanoCodec
from kanitts.codec.tiny_nemo import randomize_codec, tiny_codec_config


@pytest.fixture(scope="module")
def codec() -> NanoCodec:
    model = NanoCodec(tiny_codec_config(False))
    randomize_codec(model, 5)
    return model.to("cuda").eval()


def _run(pool: FastStreamingDecoder, k: int, chunks: list[int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, pool.codec.codebook_size, (k, sum(chunks), pool.num_codebooks), generator=g)
    slots = list(range(k))
    pool.reset(slots)
    outs, t = [], 0
    for n in chunks:
        outs.append(pool.step_slots(slots, codes[:, t : t + n]))
        t += n
    torch.cuda.synchronize()
    return torch.cat(outs, -1).float().cpu()


@pytest.fixture
def no_tf32():
    """Full float32 convolutions: cuDNN's default TF32 rounds to ~1e-3, and the capped plan's
    shapes get other algorithms than the eager pool's, so TF32 would hide real differences."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_capped_graphs_decode_like_the_eager_pool(codec: NanoCodec, no_tf32: None) -> None:
    eager = FastStreamingDecoder(codec, 24, compile=False, cuda_graphs=False)
    capped = FastStreamingDecoder(codec, 24, compile=False, cuda_graphs=True, max_batch_frames=16)
    assert capped.warmup() == len(capped.graph_shapes())
    assert sorted(capped.stats()["graphs"]) == sorted(capped.graph_shapes())
    assert max(b * f for b, f in capped.graph_shapes()) <= 16
    want = _run(eager, 21, [1, 8, 7, 3])
    got = _run(capped, 21, [1, 8, 7, 3])
    assert len(capped.plan_calls(21, 8)) > 1
    assert (got - want).abs().max() <= 1e-4  # float32 without TF32; cuDNN may pick other algorithms per shape
    assert sorted(capped.stats()["graphs"]) == sorted(capped.graph_shapes())  # nothing captured late


def _peak_allocated(codec: NanoCodec, cap: int | None) -> int:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    pool = FastStreamingDecoder(codec, 64, compile=False, cuda_graphs=True, max_batch_frames=cap,
                                buckets=(64,), frame_sizes=(8,))
    pool.warmup()
    _run(pool, 64, [8, 8])
    peak = torch.cuda.max_memory_allocated() - base
    del pool
    return peak


def test_the_cap_bounds_a_steps_memory(codec: NanoCodec) -> None:
    # 64 streams x 8 frames with the one bucket 64: uncapped, one 64 x 8 graph; capped at 64
    # stream-frames, 8 frames no longer fit the bucket, so the pool keeps frame size 1 and
    # a step is 8 calls of 64 x 1: 8x less activation memory (the state is the same).
    uncapped = _peak_allocated(codec, None)
    capped = _peak_allocated(codec, 64)
    assert capped * 4 < uncapped, (capped, uncapped)
