"""Voice blends: parsing, mixing, and resolving names through the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kanitts.voices import (
    BlendSyntaxError,
    Requester,
    VoiceInvalidError,
    VoiceNotFoundError,
    VoiceStore,
    blend_voices,
    is_blend,
    mix_embeddings,
    parse_blend,
)


def unit(seed: int, dim: int = 128) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("alice(0.7)+bob(0.3)", [("alice", 0.7), ("bob", 0.3)]),
        ("  alice ( 0.7 ) +\tbob(0.3) ", [("alice", 0.7), ("bob", 0.3)]),
        ("alice+bob+carol", [("alice", 1 / 3), ("bob", 1 / 3), ("carol", 1 / 3)]),
        ("alice", [("alice", 1.0)]),
        ("old man(3)+girl(1)", [("old man", 0.75), ("girl", 0.25)]),
        ("a(.5)+b(1e+0)+c(0)", [("a", 1 / 3), ("b", 2 / 3), ("c", 0.0)]),
    ],
)
def test_parse(spec: str, expected: list[tuple[str, float]]) -> None:
    got = parse_blend(spec)
    assert [n for n, _ in got] == [n for n, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "name is missing at the start"),
        ("alice(0.7)+", "name is missing after '\\+'"),
        ("+bob", "name is missing at the start"),
        ("alice(", "near 'alice\\('"),
        ("alice)", "near"),
        ("alice(0.5)bob", "near"),
        ("alice(1)(2)", "near"),
        ("alice(x)+bob(1)", "weight 'x' of 'alice' is not a number"),
        ("alice(nan)+bob(1)", "not a number"),
        ("alice(-0.5)+bob(1)", "must not be negative"),
        ("alice(0)+bob(0.0)", "sum to zero"),
        ("alice(1)+bob", "every voice a weight, or none"),
        ("alice+ALICE", "'ALICE' appears more than once"),
    ],
)
def test_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(BlendSyntaxError, match=message):
        parse_blend(spec)


def test_is_blend() -> None:
    assert is_blend("a+b") and is_blend("a(1)") and not is_blend("alice") and not is_blend("old man")


def test_mix_is_the_renormalised_weighted_sum() -> None:
    a, b = unit(1), unit(2)
    mixed = mix_embeddings([(a, 0.7), (b, 0.3)])
    expected = 0.7 * a.astype(np.float64) + 0.3 * b
    assert mixed.dtype == np.float32
    assert np.abs(mixed - expected / np.linalg.norm(expected)).max() < 1e-6
    assert np.linalg.norm(mixed) == pytest.approx(1.0, abs=1e-6)
    assert np.abs(mix_embeddings([(3 * a, 1.0)]) - a).max() < 1e-6


def test_mix_errors() -> None:
    a = unit(1)
    with pytest.raises(VoiceInvalidError, match="cancels out"):
        mix_embeddings([(a, 0.5), (-a, 0.5)])
    with pytest.raises(VoiceInvalidError, match="shapes"):
        mix_embeddings([(a, 0.5), (unit(2, 64), 0.5)])
    with pytest.raises(VoiceInvalidError):
        mix_embeddings([])


def test_blend_through_the_store(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path, 128)
    alice, bob = Requester("key:a"), Requester("key:b")
    store.create("Alice", unit(1), alice)
    store.create("Bob", unit(2), alice)
    store.create("private", unit(3), bob)
    got = blend_voices("alice(0.7)+BOB(0.3)", lambda n: store.embedding(n, alice))
    assert np.abs(got - mix_embeddings([(unit(1), 0.7), (unit(2), 0.3)])).max() == 0
    with pytest.raises(VoiceNotFoundError, match="unknown voice 'carol' in blend"):
        blend_voices("alice+carol", lambda n: store.embedding(n, alice))
    # another key's private voice is unknown here
    with pytest.raises(VoiceNotFoundError, match="'private'"):
        blend_voices("alice+private", lambda n: store.embedding(n, alice))
