"""Parity of the native LFM2 forward with transformers' Lfm2ForCausalLM (CPU, float32).

Checked on the tiny checkpoint (``kanitts make-tiny``) and on a 3-layer checkpoint whose
norm and conv weights are random too (the tiny one's norms are all ones, which would hide
a swapped norm), with grouped-query attention. Teacher-forced logits (prefill), and the
decode path (prefill, then one token at a time in two slots at different positions).
"""

from __future__ import annotations

import json

import pytest
import torch

from kanitts.engine.native.model import StateCache
from kanitts.engine.native.spec import Lfm2Spec
from kanitts.engine.native.weights import load_lfm2
from kanitts.hub import ModelLoadError

TOL = 1e-4


@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory):
    """attention, conv, attention; 4 query heads over 2 KV heads; all weights random (fp32)."""
    from transformers import Lfm2Config, Lfm2ForCausalLM

    torch.manual_seed(3)
    cfg = Lfm2Config(vocab_size=80539, hidden_size=64, intermediate_size=192, num_hidden_layers=3,
                     num_attention_heads=4, num_key_value_heads=2, layer_types=["full_attention", "conv",
                                                                                  "full_attention"],
                     block_multiple_of=16, max_position_embeddings=4096, tie_word_embeddings=True)
    model = Lfm2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "conv.conv" in name:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if "norm" in name else 0.0))
    out = tmp_path_factory.mktemp("mixed")
    model.save_pretrained(out)
    return str(out)


def _hf(path):
    from transformers import Lfm2ForCausalLM

    return Lfm2ForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture(params=["tiny", "mixed"])
def pair(request, tiny_model, mixed_model):
    path = tiny_model if request.param == "tiny" else mixed_model
    return _hf(path), load_lfm2(path, "cpu", torch.float32)


@torch.no_grad()
def test_teacher_forced_logits_match_transformers(pair):
    hf, m = pair
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, m.spec.vocab_size, (3, 11), generator=g)
    ref = hf(input_ids=ids).logits
    cache = StateCache(m.spec, 4, 16, m.device, m.dtype)
    hidden = m.prefill(cache, torch.tensor([3, 0, 1]), ids, torch.tensor([11, 11, 11]))
    assert (m.logits(hidden) - ref).abs().max().item() <= TOL


@torch.no_grad()
def test_decode_steps_match_transformers_in_two_slots(pair):
    hf, m = pair
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, m.spec.vocab_size, (2, 14), generator=g)
    ref = hf(input_ids=ids).logits
    cache = StateCache(m.spec, 2, 16, m.device, m.dtype)
    lens = torch.tensor([6, 2])  # slot 0 has 6 prompt tokens, slot 1 has 2 (right-padded)
    hidden = m.prefill(cache, torch.tensor([0, 1]), ids[:, :6], lens)
    assert (m.logits(hidden[0, 5]) - ref[0, 5]).abs().max().item() <= TOL
    assert (m.logits(hidden[1, 1]) - ref[1, 1]).abs().max().item() <= TOL
    pos = lens.clone()
    for _ in range(8):
        toks = torch.stack([ids[0, pos[0]], ids[1, pos[1]]])
        out = m.logits(m.decode(cache, toks, pos, pos.float()))
        assert (out[0] - ref[0, pos[0]]).abs().max().item() <= TOL
        assert (out[1] - ref[1, pos[1]]).abs().max().item() <= TOL
        pos = pos + 1


@torch.no_grad()
def test_positions_are_explicit_and_embeddings_can_replace_a_row(mixed_model):
    """KaniTTS-2 hooks: float positions other than 0..L-1 change attention layers' output,
    and an embedding row spliced in equals feeding the token whose row it is."""
    m = load_lfm2(mixed_model, "cpu", torch.float32)
    ids = torch.tensor([[5, 6, 7, 8]])
    cache = StateCache(m.spec, 1, 8, m.device, m.dtype)
    lens = torch.tensor([4])
    base = m.prefill(cache, torch.tensor([0]), ids, lens)
    shifted = m.prefill(cache, torch.tensor([0]), ids, lens, positions=torch.tensor([[0.0, 0.5, 1.0, 1.5]]))
    assert (base - shifted).abs().max().item() > 1e-4
    other = torch.tensor([[5, 99, 7, 8]])
    row = m.embed[99].expand(1, 4, -1)
    mask = torch.tensor([[False, True, False, False]])
    spliced = m.prefill(cache, torch.tensor([0]), ids, lens, embeds=row, embeds_mask=mask)
    direct = m.prefill(cache, torch.tensor([0]), other, lens)
    assert (spliced - direct).abs().max().item() == 0.0


def test_spec_reads_both_config_spellings():
    full = {"model_type": "lfm2", "vocab_size": 80539, "hidden_size": 1024, "num_hidden_layers": 16,
            "num_attention_heads": 16, "num_key_value_heads": 8, "block_ff_dim": 6656, "block_multiple_of": 256,
            "full_attn_idxs": [2, 5, 8, 10, 12, 14], "rope_theta": 1e6, "tie_embedding": True}
    s = Lfm2Spec.from_config(full)
    assert s.intermediate_size == 4608  # transformers' auto-adjusted width of the 350M backbone
    assert s.attn_layers == (2, 5, 8, 10, 12, 14) and len(s.conv_layers) == 10
    assert s.head_dim == 64 and s.rope_theta == 1e6 and s.tie_embeddings
    assert s.kv_bytes_per_token(2) == 12 * 1024  # 12 KiB per position in bf16 (engine/modes.py)
    typed = dict(full, layer_types=["conv", "full_attention"] * 8, full_attn_idxs=None)
    assert Lfm2Spec.from_config(typed).attn_layers == tuple(range(1, 16, 2))
    with pytest.raises(ValueError):
        Lfm2Spec.from_config(dict(full, model_type="llama"))


def test_loading_errors_are_one_line(tmp_path):
    with pytest.raises(ModelLoadError):
        load_lfm2(str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "lfm2", "vocab_size": 10, "hidden_size": 8,
                                                      "num_hidden_layers": 1, "num_attention_heads": 2}))
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_lfm2(str(tmp_path))
