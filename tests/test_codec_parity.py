"""NanoCodec decode == NeMo's AudioCodecModel.decode on identical random weights.

The fixture (``tests/fixtures/codec/nemo_parity.npz``) was produced by
``scripts/make_codec_fixture.py`` with NeMo; the CI tests regenerate the weights from the
seed and need no NeMo. ``-m nemo`` tests re-check against a live NeMo install.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kanitts.codec import NanoCodec, write_tiny_nemo
from kanitts.codec.fixtures import weights_digest
from kanitts.codec.nanocodec import codec_from_state
from kanitts.codec.tiny_nemo import build_tiny_state

FIXTURE = Path(__file__).parent / "fixtures" / "codec" / "nemo_parity.npz"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def fixture() -> dict[str, np.ndarray]:
    data = np.load(FIXTURE)
    return {k: data[k] for k in data.files}


def _meta(fixture: dict[str, np.ndarray]) -> dict:
    return json.loads(fixture["meta_json"].tobytes())


@pytest.mark.parametrize("case", ["tiny", "full"])
def test_matches_nemo_fixture(fixture: dict[str, np.ndarray], case: str) -> None:
    meta = _meta(fixture)
    info = meta["cases"][case]
    config, state = build_tiny_state(full_size=info["full_size"], seed=meta["weight_seed"])
    assert weights_digest(state) == info["weights_sha256"], (
        "regenerated random weights differ from the fixture's (torch RNG changed?): "
        "re-run scripts/make_codec_fixture.py"
    )
    codec = codec_from_state(config, state)
    codes = torch.from_numpy(fixture[f"{case}_codes"].astype(np.int64))
    lengths = torch.from_numpy(fixture[f"{case}_lengths"].astype(np.int64))
    audio = codec.decode(codes, lengths).numpy()
    expected = fixture[f"{case}_audio"]
    assert audio.shape == expected.shape
    # The reference is not silence or all-clamped: the comparison is meaningful.
    assert 0.05 < info["audio_rms"] < 0.8 and info["clamped_fraction"] < 0.1
    assert np.abs(audio - expected).max() <= TOLERANCE


def _nemo_model(path: Path):
    pytest.importorskip("nemo.collections.tts")
    from nemo.collections.tts.models import AudioCodecModel

    return AudioCodecModel.restore_from(str(path), map_location="cpu").eval()


@pytest.mark.nemo
def test_tiny_nemo_restores_in_nemo(tmp_path: Path) -> None:
    path = write_tiny_nemo(tmp_path / "tiny.nemo", seed=3)
    model = _nemo_model(path)
    assert model.sample_rate == 22050 and model.samples_per_frame == 1764
    # NeMo loads codec checkpoints with strict=False: prove the decoder weights arrived.
    _, state = build_tiny_state(seed=3)
    nemo_state = model.state_dict()
    for key, value in state.items():
        if key.startswith(("audio_decoder.", "audio_encoder.", "vector_quantizer.")):
            assert torch.equal(nemo_state[key].cpu(), value), key


@pytest.mark.nemo
def test_live_nemo_parity(tmp_path: Path) -> None:
    path = write_tiny_nemo(tmp_path / "tiny.nemo", seed=5)
    model = _nemo_model(path)
    ours = NanoCodec.from_pretrained(path)
    codes = torch.randint(0, 4032, (3, 4, 9), generator=torch.Generator().manual_seed(9))
    lengths = torch.tensor([9, 4, 6])
    with torch.inference_mode():
        expected, _ = model.decode(tokens=codes, tokens_len=lengths)
        # The module-level path the fixture script documents: indices are [C, B, T].
        latent = model.vector_quantizer.decode(indices=codes.permute(1, 0, 2), input_len=lengths)
        via_modules, _ = model.audio_decoder(inputs=latent, input_len=lengths)
    audio = ours.decode(codes, lengths)
    assert (audio - expected).abs().max().item() <= TOLERANCE
    assert (audio - via_modules).abs().max().item() <= TOLERANCE
