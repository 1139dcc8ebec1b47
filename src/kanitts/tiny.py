"""Random-weight checkpoints in the real on-disk formats (``kanitts make-tiny``).

Model weights cannot be downloaded in CI, so tests run the real loading code on these:
an HF folder (config.json with model_type lfm2 and the real vocab size, safetensors, a
``tokenizers`` tokenizer that adds BOS like the real one) plus a NanoCodec ``.nemo``.
``full_size`` gives the real model and codec sizes for speed work: cost does not depend on
the weights' values. Random weights never make speech.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from kanitts.tokens import END_OF_TEXT, MODEL_VOCAB_SIZE, START_OF_TEXT

logger = logging.getLogger(__name__)

_CORPUS = [
    "Hello world. This is a test of the speech model, with numbers like one two three.",
    "Hola mundo. Esta es una prueba del modelo de voz, con números como uno dos tres.",
    "andrew: katie: nova: ballad: ash: The quick brown fox jumps over the lazy dog!",
    "¿Qué tal? ¡Muy bien! Quick questions, long answers; commas, colons: and dashes - too.",
]


def write_tokenizer(out: Path) -> None:
    """A byte-level BPE tokenizer: every string encodes, BOS is id 1, EOS (END_OF_TEXT) id 2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|pad|>", "<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    assert tok.token_to_id("<|startoftext|>") == START_OF_TEXT
    assert tok.token_to_id("<|endoftext|>") == END_OF_TEXT
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A",
        pair="<|startoftext|> $A $B",
        special_tokens=[("<|startoftext|>", START_OF_TEXT)],
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
    ).save_pretrained(out)


def lfm2_config(full_size: bool, speakers: list[str]) -> "object":
    from transformers import Lfm2Config

    if full_size:
        # The LFM2-350M backbone of KaniTTS-370M/400M.
        layers = ["full_attention" if i in (2, 5, 8, 10, 12, 14) else "conv" for i in range(16)]
        kw = dict(hidden_size=1024, intermediate_size=6656, num_hidden_layers=16,
                  num_attention_heads=16, num_key_value_heads=8)  # fmt: skip
    else:
        layers = ["conv", "full_attention"]
        kw = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    cfg = Lfm2Config(
        vocab_size=MODEL_VOCAB_SIZE,
        layer_types=layers,
        max_position_embeddings=128000 if full_size else 4096,
        norm_eps=1e-5,
        conv_L_cache=3,
        block_multiple_of=256 if full_size else 16,
        block_ffn_dim_multiplier=1.0,
        block_auto_adjust_ff_dim=True,
        tie_word_embeddings=True,
        dtype="bfloat16",
        bos_token_id=START_OF_TEXT,
        eos_token_id=END_OF_TEXT,
        pad_token_id=0,
        speaker_settings={"status": "multispeaker", "speaker_list": speakers},
        **kw,
    )
    # Keys the published config.json carries and vLLM's lfm2 loader reads.
    cfg.conv_dim = cfg.conv_dim_out = cfg.block_dim = cfg.hidden_size
    cfg.block_ff_dim = cfg.intermediate_size
    return cfg


def make_model(out: Path, *, speakers: list[str], language: str, full_size: bool = False, seed: int = 0) -> Path:
    import torch
    from transformers import Lfm2ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = lfm2_config(full_size, speakers)
    model = Lfm2ForCausalLM(cfg)
    model = model.to(torch.bfloat16)
    model.save_pretrained(out)
    write_tokenizer(out)
    cfg_path = out / "config.json"
    data = json.loads(cfg_path.read_text())
    data["speaker_settings"] = {"status": "multispeaker", "speaker_list": speakers}
    data["kanitts_language"] = language
    cfg_path.write_text(json.dumps(data, indent=2))
    return out


def make_tiny(
    out_dir: str | Path,
    *,
    voices: list[str] | None = None,
    language: str = "en",
    full_size: bool = False,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write ``out_dir/model/`` and ``out_dir/codec.nemo``; returns both paths."""
    from kanitts.codec.tiny_nemo import write_tiny_nemo

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if voices is None:
        voices = ["andrew", "katie"] if language == "en" else ["nova", "ballad", "ash"]
    model_dir = make_model(out / "model", speakers=voices, language=language, full_size=full_size, seed=seed)
    codec_path = write_tiny_nemo(out / "codec.nemo", full_size=full_size, seed=seed)
    logger.info("wrote %s and %s", model_dir, codec_path)
    return model_dir, Path(codec_path)
