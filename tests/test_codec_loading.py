"""Reading .nemo archives: layouts, weight-norm variants and clear failures."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

from kanitts.codec import NanoCodec, write_tiny_nemo
from kanitts.codec.loading import read_nemo_archive, resolve_interpolations
from kanitts.codec.tiny_nemo import build_tiny_state, write_nemo
from kanitts.hub import ModelLoadError

CODES = torch.randint(0, 4032, (2, 4, 3), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    path = write_tiny_nemo(tmp_path_factory.mktemp("ref") / "ref.nemo", seed=1)
    return NanoCodec.from_pretrained(path).decode(CODES)


def test_layout_and_metadata(tmp_path: Path) -> None:
    path = write_tiny_nemo(tmp_path, seed=1)
    assert path.name == "nanocodec-tiny.nemo"
    with tarfile.open(path, "r:") as tar:  # uncompressed, as NeMo writes it
        names = sorted(tar.getnames())
    assert names == ["./model_config.yaml", "./model_weights.ckpt"]
    _, state = read_nemo_archive(path)
    assert any(k.startswith("audio_encoder.") for k in state)
    assert "audio_decoder.pre_conv.conv.parametrizations.weight.original0" in state
    codec = NanoCodec.from_pretrained(tmp_path)  # a folder holding one .nemo
    assert (codec.sample_rate, codec.samples_per_frame, codec.num_codebooks) == (22050, 1764, 4)


@pytest.mark.parametrize("variant", ["gzip", "legacy_weight_norm"])
def test_variants_decode_identically(tmp_path: Path, reference: torch.Tensor, variant: str) -> None:
    path = write_tiny_nemo(tmp_path / "v.nemo", seed=1, **{variant: True})
    if variant == "legacy_weight_norm":
        _, state = read_nemo_archive(path)
        assert "audio_decoder.pre_conv.conv.weight_g" in state
    audio = NanoCodec.from_pretrained(path).decode(CODES)
    assert (audio - reference).abs().max().item() <= 1e-6


def test_interpolated_config_and_bf16(tmp_path: Path, reference: torch.Tensor) -> None:
    config, state = build_tiny_state(seed=1)
    config["up_sample_rates"] = config["audio_decoder"]["up_sample_rates"]
    config["audio_decoder"]["up_sample_rates"] = "${up_sample_rates}"
    path = write_nemo(tmp_path / "i.nemo", config, state)
    codec = NanoCodec.from_pretrained(path, dtype=torch.bfloat16)
    assert codec.dtype == torch.bfloat16
    audio = codec.decode(CODES).float()
    assert (audio - reference).abs().mean().item() < 0.05
    assert resolve_interpolations({"a": [1], "b": "${a}", "c": "x${a.0}"}) == {"a": [1], "b": [1], "c": "x1"}


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    config, state = build_tiny_state(seed=1)
    del state["audio_decoder.post_conv.conv.bias"]
    state["audio_decoder.extra_layer.conv.bias"] = torch.zeros(3)
    path = write_nemo(tmp_path / "bad.nemo", config, state)
    with pytest.raises(ModelLoadError) as err:
        NanoCodec.from_pretrained(path)
    assert "audio_decoder.post_conv.bias" in str(err.value)
    assert "audio_decoder.extra_layer.bias" in str(err.value)


def test_shape_and_config_mismatch(tmp_path: Path) -> None:
    config, state = build_tiny_state(seed=1)
    config["audio_decoder"]["base_channels"] = 128
    with pytest.raises(ModelLoadError, match="shape"):
        NanoCodec.from_pretrained(write_nemo(tmp_path / "a.nemo", config, state))
    config, state = build_tiny_state(seed=1)
    config["audio_decoder"]["_target_"] = "nemo.collections.tts.modules.audio_codec_modules.HiFiGANDecoder"
    with pytest.raises(ModelLoadError, match="CausalHiFiGANDecoder"):
        NanoCodec.from_pretrained(write_nemo(tmp_path / "b.nemo", config, state))
    config, state = build_tiny_state(seed=1)
    config["vector_quantizer"]["num_levels_per_group"] = [8, 8, 8, 8]
    with pytest.raises(ModelLoadError, match="levels"):
        NanoCodec.from_pretrained(write_nemo(tmp_path / "c.nemo", config, state))


def test_not_an_archive(tmp_path: Path) -> None:
    bad = tmp_path / "junk.nemo"
    bad.write_bytes(b"not a tar")
    with pytest.raises(ModelLoadError, match="junk.nemo"):
        NanoCodec.from_pretrained(bad)
    only_cfg = tmp_path / "cfg.nemo"
    with tarfile.open(only_cfg, "w") as tar:
        data = yaml.safe_dump({"a": 1}).encode()
        info = tarfile.TarInfo("model_config.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ModelLoadError, match="model_weights.ckpt"):
        NanoCodec.from_pretrained(only_cfg)


def test_missing_path_and_offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelLoadError):
        NanoCodec.from_pretrained(tmp_path / "nope" / "codec.nemo")
    with pytest.raises(ModelLoadError, match=r"no \*\.nemo"):
        NanoCodec.from_pretrained(tmp_path)
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError, match="nvidia/nemo-nano-codec"):
        NanoCodec.from_pretrained("nvidia/nemo-nano-codec-22khz-0.6kbps-12.5fps")
