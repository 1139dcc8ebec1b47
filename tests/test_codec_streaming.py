"""Streaming decode == one-shot decode, for any chunking, slot layout and mask."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kanitts.codec import NanoCodec, StreamingDecoder, write_tiny_nemo

TOL = 1e-5
FRAMES = 8
SPF = 1764


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory) -> NanoCodec:
    return NanoCodec.from_pretrained(write_tiny_nemo(tmp_path_factory.mktemp("s"), seed=4))


@pytest.fixture(scope="module")
def streams(codec: NanoCodec) -> tuple[torch.Tensor, torch.Tensor]:
    """Three streams' codes and each one's one-shot decode (decoded alone)."""
    codes = torch.randint(0, 4032, (3, 4, FRAMES), generator=torch.Generator().manual_seed(7))
    ref = torch.cat([codec.decode(codes[b : b + 1]) for b in range(3)])
    return codes, ref


def test_context_shapes(codec: NanoCodec) -> None:
    shapes = codec.decoder.context_shapes()
    assert shapes[0] == (16, 6)  # pre_conv: kernel 7
    assert (96, 1) in shapes  # first transposed conv keeps one input frame
    assert max(length for _, length in shapes) == 50  # kernel 11, dilation 5


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.sets(st.integers(1, FRAMES - 1), max_size=6))
def test_any_chunking_matches_one_shot(codec: NanoCodec, streams, cuts: set[int]) -> None:
    codes, ref = streams
    pool = StreamingDecoder(codec, 4)
    bounds = [0, *sorted(cuts), FRAMES]
    out = [pool.step_slots([3, 0, 1], codes[:, :, a:b].transpose(1, 2)) for a, b in zip(bounds, bounds[1:])]
    audio = torch.cat(out, dim=-1)
    assert audio.shape == ref.shape
    assert (audio - ref).abs().max().item() <= TOL


def test_masked_pool_streams_at_different_positions(codec: NanoCodec, streams) -> None:
    """Fixed-shape ``step`` with exec masks: stream 0 starts at step 0, stream 1 joins
    later, stream 2 takes a slot that a finished stream used before (reset), and slot 3
    stays idle (masked) throughout; chunk sizes vary per step."""
    codes, ref = streams
    pool = StreamingDecoder(codec, 4)
    junk = torch.randint(0, 4032, (4, 4, 3), generator=torch.Generator().manual_seed(1))
    pool.step(junk, torch.tensor([False, False, True, False]))  # a previous stream in slot 2
    idle_before = [s[3].clone() for s in pool.states]
    pool.reset(torch.tensor([False, False, True, False]))
    pos = [0, 0, 0]
    got: list[list[torch.Tensor]] = [[], [], []]
    schedule = [  # per step: frames taken by streams 0, 1, 2 (0 = not running)
        (2, 0, 0), (1, 2, 0), (3, 1, 2), (0, 3, 1), (2, 2, 3), (0, 0, 2), (0, 0, 0)
    ]
    for take in schedule:
        for n in sorted(set(take) - {0}):
            run = torch.tensor([t == n for t in take] + [False])
            batch = torch.zeros(4, 4, n, dtype=torch.long)
            for b in range(3):
                if take[b] == n:
                    batch[b] = codes[b, :, pos[b] : pos[b] + n]
            audio = pool.step(batch, run)
            assert audio[~run].abs().max().item() == 0.0
            for b in range(3):
                if take[b] == n:
                    got[b].append(audio[b])
                    pos[b] += n
    assert pos == [FRAMES, FRAMES, FRAMES]
    for b in range(3):
        assert (torch.cat(got[b]) - ref[b]).abs().max().item() <= TOL
    for before, state in zip(idle_before, pool.states):
        assert torch.equal(state[3], before)  # masked slot untouched, bit for bit


def test_step_slots_leaves_other_slots_alone(codec: NanoCodec, streams) -> None:
    codes, ref = streams
    pool = StreamingDecoder(codec, 3)
    pool.step_slots([1], codes[1:2, :, :4].transpose(1, 2))
    snapshot = [s.clone() for s in pool.states]
    pool.step_slots([0, 2], codes[[0, 2], :, :5].transpose(1, 2))
    for before, state in zip(snapshot, pool.states):
        assert torch.equal(state[1], before[1])
    tail = pool.step_slots([1], codes[1:2, :, 4:].transpose(1, 2))
    assert (tail[0] - ref[1, 4 * SPF :]).abs().max().item() <= TOL


def test_input_validation(codec: NanoCodec) -> None:
    pool = StreamingDecoder(codec, 2)
    with pytest.raises(ValueError):
        pool.step(torch.zeros(1, 4, 1, dtype=torch.long))
    with pytest.raises(ValueError):
        pool.step_slots([0], torch.zeros(1, 0, 4, dtype=torch.long))
    with pytest.raises(ValueError):
        StreamingDecoder(codec, 0)
