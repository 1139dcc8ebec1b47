"""Speaker encoder == the official KaniTTS-2 ``EmbeddingsModel`` on identical random weights.

The fixture (``tests/fixtures/speaker/reference_parity.npz``) holds the reference's
embeddings, made by ``scripts/make_speaker_fixture.py``; weights and inputs are
regenerated from seeds, so CI needs no reference install. When ``kani-tts-2`` is
installed (``pip install --no-deps kani-tts-2==0.0.5``) the live tests load the very
folder kanitts writes into the reference class with a strict key match.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _speaker_helpers import parity_inputs, reference_embedder_module

from kanitts.hub import ModelLoadError
from kanitts.speaker import SpeakerEncoder, load_speaker_encoder
from kanitts.speaker.loading import BIN_NAME, SAFETENSORS_NAME, encoder_from_state, read_encoder_config
from kanitts.speaker.tiny import build_tiny_state, state_digest, write_tiny_speaker_encoder

FIXTURE = Path(__file__).parent / "fixtures" / "speaker" / "reference_parity.npz"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def fixture() -> dict:
    data = np.load(FIXTURE)
    out = {k: data[k] for k in data.files}
    out["meta"] = json.loads(out.pop("meta_json").tobytes())
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, fixture: dict) -> Path:
    return write_tiny_speaker_encoder(tmp_path_factory.mktemp("spk"), seed=fixture["meta"]["weight_seed"])


@pytest.fixture(scope="module")
def encoder(tiny_dir: Path) -> SpeakerEncoder:
    return load_speaker_encoder(tiny_dir)


def test_regenerated_weights_and_inputs_match_the_fixture(fixture: dict) -> None:
    meta = fixture["meta"]
    assert state_digest(build_tiny_state(seed=meta["weight_seed"])[1]) == meta["weights_digest"]
    x = parity_inputs(meta["input_seed"])
    assert float(x.double().abs().sum()) == pytest.approx(meta["input_digest"], rel=1e-12)


def test_matches_reference_fixture(encoder: SpeakerEncoder, fixture: dict) -> None:
    x = parity_inputs(fixture["meta"]["input_seed"])
    with torch.inference_mode():
        batched = encoder(x).numpy()
    single = np.stack([encoder.embed(row.numpy()) for row in x])
    assert batched.shape == (3, 128)
    assert np.abs(batched - fixture["batched"]).max() <= TOLERANCE
    assert np.abs(single - fixture["single"]).max() <= TOLERANCE
    # the inputs give distinct embeddings, so the comparison can fail
    assert np.abs(fixture["single"][0] - fixture["single"][1]).max() > 100 * TOLERANCE


def test_matches_live_reference(tiny_dir: Path, encoder: SpeakerEncoder) -> None:
    ref = reference_embedder_module()
    if ref is None:
        pytest.skip("kani-tts-2 not installed (pip install --no-deps kani-tts-2==0.0.5)")
    from safetensors.torch import load_file
    from transformers import WavLMConfig

    model = ref.EmbeddingsModel(WavLMConfig.from_pretrained(tiny_dir))
    # strict: every key kanitts writes is one the reference expects, and none is missing
    model.load_state_dict(load_file(str(tiny_dir / SAFETENSORS_NAME)), strict=True)
    model.eval()
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 16000 * 3 + 123, generator=gen) * torch.tensor([[1.0], [0.05]])
    with torch.no_grad():
        expected = model(x)
    with torch.inference_mode():
        got = encoder(x)
    assert (got - expected).abs().max().item() <= TOLERANCE


def test_embedding_is_unit_norm_float32(encoder: SpeakerEncoder) -> None:
    pcm = parity_inputs()[1].numpy().astype(np.float64)
    emb = encoder.embed(pcm)
    assert emb.dtype == np.float32 and emb.shape == (encoder.dim,)
    assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
    # scale invariance from the mean-variance normalisation
    assert np.abs(encoder.embed(pcm * 0.1) - emb).max() <= 1e-5


def test_embed_rejects_bad_shapes(encoder: SpeakerEncoder) -> None:
    with pytest.raises(ValueError, match="mono"):
        encoder.embed(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(ValueError, match="too short"):
        encoder.embed(np.zeros(100, dtype=np.float32))


def test_loads_legacy_weight_norm_names_from_bin(tmp_path: Path, tiny_dir: Path, encoder: SpeakerEncoder) -> None:
    from safetensors.torch import load_file

    state = load_file(str(tiny_dir / SAFETENSORS_NAME))
    legacy = {
        k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        ): v
        for k, v in state.items()
    }
    assert any(k.endswith(".weight_g") for k in legacy)
    torch.save(legacy, tmp_path / BIN_NAME)
    (tmp_path / "config.json").write_text((tiny_dir / "config.json").read_text())
    old = load_speaker_encoder(tmp_path)
    x = parity_inputs()[:1]
    with torch.inference_mode():
        assert torch.equal(old(x), encoder(x))


def test_load_errors_are_one_clear_line(tmp_path: Path, tiny_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such folder"):
        load_speaker_encoder(tmp_path / "missing")
    (tmp_path / "config.json").write_text((tiny_dir / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="no model.safetensors"):
        load_speaker_encoder(tmp_path)
    config, state = build_tiny_state()
    del state["top_layers.affine2.weight"]
    with pytest.raises(ModelLoadError, match="missing.*affine2"):
        encoder_from_state(config, state)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "lfm2"}))
    with pytest.raises(ModelLoadError, match="not 'wavlm'"):
        read_encoder_config(tmp_path)


def test_bf16_model_gives_float32_unit_vectors_close_to_float32(tiny_dir: Path, encoder: SpeakerEncoder) -> None:
    half = load_speaker_encoder(tiny_dir, dtype=torch.bfloat16)
    pcm = parity_inputs()[1].numpy()
    emb = half.embed(pcm)
    assert emb.dtype == np.float32 and np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-2)
    assert float(emb @ encoder.embed(pcm)) > 0.98


def test_embed_reference_audio_from_an_uploaded_file(encoder: SpeakerEncoder) -> None:
    import io

    import av

    from kanitts.speaker import ReferenceAudioError, decode_reference_audio, embed_reference_audio

    pcm = (parity_inputs()[1].numpy() * 32767 * 0.5).astype(np.int16)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = 16000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    emb = embed_reference_audio(encoder, buf.getvalue())
    assert np.array_equal(emb, encoder.embed(decode_reference_audio(buf.getvalue())))
    assert np.abs(emb - encoder.embed(parity_inputs()[1].numpy())).max() < 1e-3  # 16-bit rounding only
    with pytest.raises(ReferenceAudioError, match="could not be decoded"):
        embed_reference_audio(encoder, b"not audio at all")


def test_loads_sharded_safetensors(tmp_path: Path, tiny_dir: Path, encoder: SpeakerEncoder) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_dir / SAFETENSORS_NAME))
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, str(tmp_path / name))
    weight_map = {k: name for name, part in shards.items() for k in part}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text((tiny_dir / "config.json").read_text())
    x = parity_inputs()[:1]
    with torch.inference_mode():
        assert torch.equal(load_speaker_encoder(tmp_path)(x), encoder(x))
