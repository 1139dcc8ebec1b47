"""NanoCodec model behaviour: FSQ mapping, shapes, batched decode with lengths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kanitts.codec import NanoCodec, write_tiny_nemo


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory) -> NanoCodec:
    return NanoCodec.from_pretrained(write_tiny_nemo(tmp_path_factory.mktemp("c"), seed=2))


def test_fsq_digits_least_significant_first(codec: NanoCodec) -> None:
    levels, bases = [9, 8, 8, 7], [1, 9, 72, 576]
    index = 5 + 9 * 3 + 72 * 7 + 576 * 6  # digits (5, 3, 7, 6)
    codes = torch.tensor([[[index], [0], [4031], [index]]])
    latent = codec.dequantize(codes)[0, :, 0]
    expected_group = [(d - L // 2) / (L // 2) for d, L in zip((5, 3, 7, 6), levels)]
    assert latent[0:4].tolist() == pytest.approx(expected_group)
    assert latent[12:16].tolist() == pytest.approx(expected_group)
    assert latent[4:8].tolist() == pytest.approx([-1.0, -1.0, -1.0, -1.0])
    top = [((4031 // b) % L - L // 2) / (L // 2) for b, L in zip(bases, levels)]
    assert latent[8:12].tolist() == pytest.approx(top)


def test_shapes_and_validation(codec: NanoCodec) -> None:
    audio = codec.decode(torch.randint(0, 4032, (2, 4, 3)))
    assert audio.shape == (2, 3 * 1764) and audio.dtype == torch.float32
    assert audio.abs().max() <= 1.0
    with pytest.raises(ValueError):
        codec.decode(torch.zeros(1, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        codec.decode(torch.full((1, 4, 2), 4032))


def test_batched_decode_equals_individual(codec: NanoCodec) -> None:
    codes = torch.randint(0, 4032, (3, 4, 7), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([7, 3, 1])
    batched = codec.decode(codes, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = codec.decode(codes[b : b + 1, :, :n])[0]
        assert (batched[b, : n * 1764] - alone).abs().max().item() <= 1e-5
        assert batched[b, n * 1764 :].abs().max().item() == 0.0 if n < 7 else True


def test_full_size_parameter_count(tmp_path: Path) -> None:
    from kanitts.codec.tiny_nemo import tiny_codec_config

    model = NanoCodec(tiny_codec_config(full_size=True))
    params = sum(p.numel() for p in model.decoder.parameters())
    assert 31.0e6 < params < 32.0e6
