"""The fixed call shapes of the batched codec pool: batch buckets, frame counts and the
split of one step into calls of bounded size (pure functions, no torch).

A step decodes ``k`` slots x ``T`` frames. Each call has a fixed shape ``(bucket,
frames)`` so that it can replay a CUDA graph: ``k`` rows are padded up to a *bucket*, ``T``
is split into the allowed *frame sizes* (exact: streaming is exact), and
``max_batch_frames`` caps ``bucket * frames``, so a step with more work than that runs
several calls in turn instead of one larger graph (its activation memory,
:mod:`kanitts.codec.memory`, stays bounded whatever the number of streams).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple


class Call(NamedTuple):
    """One decoder call of a step: rows ``rows[0]:rows[1]`` of the step's slots and frames
    ``start : start + frames``, padded to ``bucket`` rows."""

    start: int
    frames: int
    rows: tuple[int, int]
    bucket: int


def default_buckets(max_streams: int, smallest: int = 1) -> tuple[int, ...]:
    """Powers of two from ``smallest`` below ``max_streams``, then ``max_streams``."""
    out, b = [], min(smallest, max_streams)
    while b < max_streams:
        out.append(b)
        b *= 2
    out.append(max_streams)
    return tuple(out)


def split_frames(frames: int, sizes: Sequence[int]) -> list[int]:
    """Greedy split of ``frames`` into the allowed ``sizes`` (1 must be allowed)."""
    parts, left = [], frames
    for size in sorted(sizes, reverse=True):
        while left >= size:
            parts.append(size)
            left -= size
    if left:
        raise ValueError(f"cannot split {frames} frames into {sorted(sizes)}")
    return parts


def usable_frame_sizes(sizes: Sequence[int], buckets: Sequence[int], max_batch_frames: int | None) -> tuple[int, ...]:
    """``sizes`` (with 1 added) that the smallest bucket can take within the cap."""
    out = sorted({int(f) for f in sizes} | {1})
    if max_batch_frames is not None:
        most = max(1, max_batch_frames // min(buckets))
        out = [f for f in out if f <= most]
    return tuple(out)


def frame_sizes_up_to(sizes: Sequence[int], most: int) -> tuple[int, ...]:
    """``sizes`` (with 1 added), ascending, none above ``most`` frames: a caller that never
    hands one call more than ``most`` frames per stream (the serving worker: its largest
    chunk) never uses a larger frame size, so no graph needs capturing for it. Raises
    ``ValueError`` for ``most < 1``."""
    if most < 1:
        raise ValueError("most must be >= 1 frame")
    return tuple(sorted({int(f) for f in sizes if int(f) <= most} | {1}))


def bucket_cap(buckets: Sequence[int], frames: int, max_batch_frames: int | None) -> int:
    """The largest bucket a call of ``frames`` frames may use: the largest with
    ``bucket * frames <= max_batch_frames`` (the smallest bucket if none fits; the largest
    bucket without a cap). ``buckets`` ascending."""
    if max_batch_frames is None:
        return buckets[-1]
    fit = [b for b in buckets if b * frames <= max_batch_frames]
    return fit[-1] if fit else buckets[0]


def bucket_for(buckets: Sequence[int], k: int) -> int:
    """The smallest bucket holding ``k`` rows; ``ValueError`` above the largest."""
    for b in buckets:
        if b >= k:
            return b
    raise ValueError(f"{k} slots exceed the pool ({buckets[-1]})")


def plan_calls(
    k: int,
    frames: int,
    buckets: Sequence[int],
    frame_sizes: Sequence[int],
    max_batch_frames: int | None,
    graphs: bool = True,
) -> list[Call]:
    """The calls a step of ``k`` slots x ``frames`` frames runs, in order. With graphs the
    frames are split into ``frame_sizes`` and each piece's rows into runs of at most
    :func:`bucket_cap` rows, each padded to a bucket; without (eager) all frames go in one
    call and the rows in runs of at most ``max_batch_frames // frames`` (at least 1), the
    bucket being the run itself. Raises ``ValueError`` for ``frames < 1`` or ``k`` above
    the largest bucket."""
    if frames < 1:
        raise ValueError("a step needs at least one frame")
    if k > buckets[-1]:
        raise ValueError(f"{k} slots exceed the pool ({buckets[-1]})")
    calls: list[Call] = []
    if not graphs:
        rows = k if max_batch_frames is None else max(1, max_batch_frames // frames)
        for r0 in range(0, k, max(rows, 1)):
            r1 = min(k, r0 + rows)
            calls.append(Call(0, frames, (r0, r1), r1 - r0))
        return calls
    t0 = 0
    for f in split_frames(frames, frame_sizes):
        cap = bucket_cap(buckets, f, max_batch_frames)
        for r0 in range(0, k, cap):
            r1 = min(k, r0 + cap)
            calls.append(Call(t0, f, (r0, r1), bucket_for(buckets, r1 - r0)))
        t0 += f
    return calls


def graph_shapes(buckets: Sequence[int], frame_sizes: Sequence[int], max_batch_frames: int | None) -> list[tuple[int, int]]:
    """Every ``(bucket, frames)`` shape :func:`plan_calls` can use, largest
    (``bucket * frames``) first."""
    shapes = {(b, f) for f in frame_sizes for b in buckets if b <= bucket_cap(buckets, f, max_batch_frames)}
    return sorted(shapes, key=lambda s: (-s[0] * s[1], -s[1]))
