"""The codec pool's call plan (kanitts.codec.shapes): buckets, frame splits and the
``max_batch_frames`` cap, and FastStreamingDecoder running a capped plan on the CPU."""

from __future__ import annotations

import pytest
from _codec_helpers import random_codes as _codes
from _codec_helpers import stream_chunks as _stream

from kanitts.codec import CodecWorker
from kanitts.codec.fast import FastStreamingDecoder
from kanitts.codec.nanocodec import NanoCodec
from kanitts.codec.shapes import (
    bucket_cap,
    frame_sizes_up_to,
    graph_shapes,
    plan_calls,
    usable_frame_sizes,
)
from kanitts.codec.tiny_nemo import randomize_codec, tiny_codec_config

BUCKETS = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SIZES = (1, 2, 4, 8)


@pytest.fixture(scope="module")
def codec() -> NanoCodec:
    model = NanoCodec(tiny_codec_config(False))
    randomize_codec(model, 3)
    return model.eval()


def _covers(calls, k: int, frames: int) -> bool:
    """Every (row, frame) of the step is in exactly one call."""
    seen = [[0] * frames for _ in range(k)]
    for c in calls:
        for r in range(*c.rows):
            for t in range(c.start, c.start + c.frames):
                seen[r][t] += 1
    return all(v == 1 for row in seen for v in row)


@pytest.mark.parametrize("k,frames", [(1, 1), (1024, 8), (1000, 7), (300, 3), (17, 8), (1024, 1)])
def test_plan_covers_the_step_within_the_cap(k: int, frames: int) -> None:
    calls = plan_calls(k, frames, BUCKETS, SIZES, 2048)
    assert _covers(calls, k, frames)
    for c in calls:
        assert c.bucket in BUCKETS and c.frames in SIZES
        assert c.rows[1] - c.rows[0] <= c.bucket
        assert c.bucket * c.frames <= 2048


def test_plan_splits_large_steps_into_capped_buckets() -> None:
    calls = plan_calls(1024, 8, BUCKETS, SIZES, 2048)
    assert [(c.rows, c.bucket) for c in calls] == [((i, i + 256), 256) for i in range(0, 1024, 256)]
    # One frame per stream fits 1,024 streams in one call; without a cap 1,024 x 8 is one call.
    assert len(plan_calls(1024, 1, BUCKETS, SIZES, 2048)) == 1
    assert plan_calls(1024, 8, BUCKETS, SIZES, None) == plan_calls(1024, 8, BUCKETS, (8,), 8192)
    assert [c.bucket for c in plan_calls(1024, 8, BUCKETS, SIZES, None)] == [1024]
    # 7 frames -> 4 + 2 + 1, each piece's rows capped separately.
    calls = plan_calls(600, 7, BUCKETS, SIZES, 2048)
    assert [(c.start, c.frames, c.bucket) for c in calls] == [
        (0, 4, 512), (0, 4, 128), (4, 2, 1024), (6, 1, 1024)
    ]


def test_eager_plan_caps_rows_only() -> None:
    calls = plan_calls(10, 7, (10,), (1,), 21, graphs=False)
    assert [(c.rows, c.frames) for c in calls] == [((0, 3), 7), ((3, 6), 7), ((6, 9), 7), ((9, 10), 7)]
    assert len(plan_calls(10, 7, (10,), (1,), None, graphs=False)) == 1


def test_bucket_cap_and_shapes() -> None:
    assert bucket_cap(BUCKETS, 8, 2048) == 256
    assert bucket_cap(BUCKETS, 1, 2048) == 1024
    assert bucket_cap(BUCKETS, 8, 4) == 2  # nothing fits: the smallest bucket
    assert usable_frame_sizes(SIZES, BUCKETS, 6) == (1, 2)
    shapes = graph_shapes(BUCKETS, SIZES, 2048)
    assert len(shapes) == len(set(shapes)) == 8 + 9 + 10 + 10  # f=8 up to 256, f=4 up to 512
    assert max(b * f for b, f in shapes) == 2048
    assert shapes[0][0] * shapes[0][1] == 2048 and shapes[-1] == (2, 1)  # largest first
    products = [b * f for b, f in shapes]
    assert products == sorted(products, reverse=True)
    # Every call of every plan uses a captured shape.
    for k in (1, 3, 200, 700, 1024):
        for t in range(1, 12):
            assert {(c.bucket, c.frames) for c in plan_calls(k, t, BUCKETS, SIZES, 2048)} <= set(shapes)


def test_capped_pool_computes_the_same_audio(codec: NanoCodec) -> None:
    """A pool whose calls are capped (rows and frames split over several calls, the graphed
    plan run eagerly) decodes what an uncapped pool does."""
    ref = FastStreamingDecoder(codec, 8, compile=False)
    capped = FastStreamingDecoder(codec, 8, compile=False, max_batch_frames=6)
    assert capped.frame_sizes == (1, 2, 4) and capped.stats()["max_batch_frames"] == 6
    capped.cuda_graphs = True  # run the graphed plan; no graph exists on the CPU, so each call runs eagerly
    capped._graph = lambda bucket, frames: None  # type: ignore[method-assign]
    assert len(capped.plan_calls(7, 7)) > 3
    codes = _codes(codec, 7, 12, 1)
    slots = [5, 0, 3, 7, 1, 2, 6]
    want = _stream(ref, slots, codes, [1, 7, 4])
    got = _stream(capped, slots, codes, [1, 7, 4])
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-5
    with pytest.raises(ValueError):
        FastStreamingDecoder(codec, 2, max_batch_frames=0)


def test_worker_passes_the_cap(codec: NanoCodec) -> None:
    worker = CodecWorker(codec, max_streams=4, max_batch_frames=16)
    assert worker._pool.max_batch_frames == 16  # type: ignore[union-attr]
    worker.close()


def test_frame_sizes_up_to_the_largest_call() -> None:
    assert frame_sizes_up_to(SIZES, 8) == (1, 2, 4, 8)
    assert frame_sizes_up_to(SIZES, 5) == (1, 2, 4)
    assert frame_sizes_up_to((8, 4), 1) == (1,)
    with pytest.raises(ValueError):
        frame_sizes_up_to(SIZES, 0)


@pytest.mark.parametrize("first,chunk,sizes", [(1, 8, (1, 2, 4, 8)), (1, 4, (1, 2, 4)), (2, 3, (1, 2)),
                                               (4, 1, (1, 2, 4)), (1, 1, (1,)), (1, 32, (1, 2, 4, 8))])
def test_worker_captures_no_graph_for_more_frames_than_a_step_takes(codec: NanoCodec, first: int, chunk: int,
                                                                   sizes: tuple[int, ...]) -> None:
    """A step takes at most max(first_chunk_frames, chunk_frames) frames from a stream: the
    worker's pool has no frame size (so no graph) above it."""
    worker = CodecWorker(codec, max_streams=4, first_chunk_frames=first, chunk_frames=chunk)
    pool = worker._pool
    assert pool.frame_sizes == sizes  # type: ignore[union-attr]
    assert {f for _, f in pool.graph_shapes()} == set(sizes)  # type: ignore[union-attr]
    assert len(pool.graph_shapes()) == len(pool.buckets) * len(sizes)  # type: ignore[union-attr]
    worker.close()
