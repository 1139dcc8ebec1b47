"""KaniTTS token layout, prompt templates and the token-stream -> codec-frame parser.

Everything that knows which integer means what lives here, so that the engines, the
codec and the server never hard-code token ids.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

logger = logging.getLogger(__name__)

TEXT_VOCAB_SIZE = 64400
START_OF_TEXT = 1
END_OF_TEXT = 2
START_OF_SPEECH = TEXT_VOCAB_SIZE + 1  # 64401
END_OF_SPEECH = TEXT_VOCAB_SIZE + 2  # 64402
START_OF_HUMAN = TEXT_VOCAB_SIZE + 3  # 64403
END_OF_HUMAN = TEXT_VOCAB_SIZE + 4  # 64404
START_OF_AI = TEXT_VOCAB_SIZE + 5  # 64405
END_OF_AI = TEXT_VOCAB_SIZE + 6  # 64406
PAD = TEXT_VOCAB_SIZE + 7  # 64407
AUDIO_TOKEN_START = TEXT_VOCAB_SIZE + 10  # 64410
NUM_CODEBOOKS = 4
CODEBOOK_SIZE = 4032
AUDIO_TOKEN_END = AUDIO_TOKEN_START + NUM_CODEBOOKS * CODEBOOK_SIZE  # 80538, exclusive
MODEL_VOCAB_SIZE = 80539  # config.json vocab_size of the published models

#: Tokens that end generation. END_OF_TEXT is *not* one: inside speech it is just an
#: invalid token, and the reference implementation stops on END_OF_SPEECH / END_OF_AI.
STOP_TOKEN_IDS: tuple[int, ...] = (END_OF_SPEECH, END_OF_AI)

SAMPLE_RATE = 22050
FRAMES_PER_SECOND = 12.5
SAMPLES_PER_FRAME = 1764
TOKENS_PER_SECOND = int(FRAMES_PER_SECOND * NUM_CODEBOOKS)  # 50


class MalformedStreamError(ValueError):
    """The model produced a token sequence that cannot be decoded as audio frames."""


def audio_token(codebook: int, code: int) -> int:
    """Token id of ``code`` in ``codebook`` (the model's flat audio vocabulary)."""
    if not 0 <= codebook < NUM_CODEBOOKS:
        raise ValueError(f"codebook {codebook} out of range 0..{NUM_CODEBOOKS - 1}")
    if not 0 <= code < CODEBOOK_SIZE:
        raise ValueError(f"code {code} out of range 0..{CODEBOOK_SIZE - 1}")
    return AUDIO_TOKEN_START + codebook * CODEBOOK_SIZE + code


def split_audio_token(token_id: int) -> tuple[int, int]:
    """Inverse of :func:`audio_token`: ``(codebook, code)``."""
    if not AUDIO_TOKEN_START <= token_id < AUDIO_TOKEN_END:
        raise MalformedStreamError(f"token {token_id} is not an audio token")
    offset = token_id - AUDIO_TOKEN_START
    return offset // CODEBOOK_SIZE, offset % CODEBOOK_SIZE


def frame_tokens(codes: Sequence[int]) -> list[int]:
    """Token ids of one frame given its 4 codes (codebook order)."""
    if len(codes) != NUM_CODEBOOKS:
        raise ValueError(f"a frame has {NUM_CODEBOOKS} codes, got {len(codes)}")
    return [audio_token(k, c) for k, c in enumerate(codes)]


def allowed_range(position_in_frame: int) -> tuple[int, int]:
    """Half-open id range of the codebook expected at ``position_in_frame`` (0..3)."""
    lo = AUDIO_TOKEN_START + position_in_frame * CODEBOOK_SIZE
    return lo, lo + CODEBOOK_SIZE


class PromptTemplate(BaseModel):
    """How a (voice, text) pair becomes prompt ids; configurable per model.

    ``text_format`` is formatted with ``voice`` and ``text``; ``voiceless_format`` is used
    for models without speakers. ``prefix``/``suffix`` are raw token ids around the
    tokenizer's output (which carries its own BOS when ``add_special_tokens``).
    """

    prefix: list[int] = Field(default_factory=lambda: [START_OF_HUMAN])
    suffix: list[int] = Field(default_factory=lambda: [END_OF_TEXT, END_OF_HUMAN])
    text_format: str = "{voice}: {text}"
    voiceless_format: str = "{text}"
    add_special_tokens: bool = True


DEFAULT_TEMPLATE = PromptTemplate()


class Tokenizer(Protocol):
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...


def build_prompt(
    tokenizer: Tokenizer,
    text: str,
    voice: str | None,
    template: PromptTemplate = DEFAULT_TEMPLATE,
) -> list[int]:
    """Prompt ids in the layout the model was trained on:
    ``[SOH] + tok("voice: text") + [EOT, EOH]`` by default."""
    fmt = template.text_format if voice else template.voiceless_format
    body = fmt.format(voice=voice or "", text=text)
    ids = list(tokenizer.encode(body, add_special_tokens=template.add_special_tokens))
    return [*template.prefix, *ids, *template.suffix]


class FrameParser:
    """Incremental parser: model tokens in, complete 4-code frames out.

    Accepts the model's framing tokens (START_OF_AI, START_OF_SPEECH) before audio,
    stops at END_OF_SPEECH / END_OF_AI, and raises :class:`MalformedStreamError` where the
    token stream breaks the grammar (so it would be mis-decoded): a codebook out of order,
    a text token inside speech, or a stream that ends in the middle of a frame. Each token
    is checked once, here; the frames it emits hold ``NUM_CODEBOOKS`` codes in
    ``0..CODEBOOK_SIZE - 1`` by construction. Checking frames against the loaded codec is
    not its job: :class:`kanitts.codec.CodecWorker` does that where frames enter the codec
    (and raises ``ValueError``).
    """

    def __init__(self) -> None:
        self._partial: list[int] = []
        self._in_speech = False
        self.finished = False
        self.frames_emitted = 0

    def feed(self, token_ids: Iterable[int]) -> list[list[int]]:
        frames: list[list[int]] = []
        for tok in token_ids:
            if self.finished:
                break
            if tok in (END_OF_SPEECH, END_OF_AI):
                if self._partial:
                    raise MalformedStreamError(
                        f"speech ended in the middle of a frame ({len(self._partial)} of "
                        f"{NUM_CODEBOOKS} codes)"
                    )
                self.finished = True
                break
            if tok in (START_OF_AI, START_OF_SPEECH) and not self._partial:
                self._in_speech = self._in_speech or tok == START_OF_SPEECH
                continue
            if not AUDIO_TOKEN_START <= tok < AUDIO_TOKEN_END:
                raise MalformedStreamError(
                    f"token {tok} is not an audio token (frame {self.frames_emitted}, "
                    f"position {len(self._partial)})"
                )
            codebook, code = divmod(tok - AUDIO_TOKEN_START, CODEBOOK_SIZE)  # in range: checked above
            if codebook != len(self._partial):
                raise MalformedStreamError(
                    f"expected codebook {len(self._partial)} in frame {self.frames_emitted}, "
                    f"got codebook {codebook} (token {tok})"
                )
            self._partial.append(code)
            if len(self._partial) == NUM_CODEBOOKS:
                frames.append(self._partial)
                self._partial = []
                self.frames_emitted += 1
        return frames

    def close(self) -> None:
        """Call when the token stream ended without a stop token (e.g. max_tokens)."""
        if self._partial:
            # max_tokens can cut a frame: drop the partial frame, it carries no audio.
            logger.debug("dropping %d codes of an incomplete final frame", len(self._partial))
            self._partial = []
        self.finished = True


def read_speakers(model_dir: str | Path) -> list[str] | None:
    """Speaker names from ``config.json``'s ``speaker_settings`` (None when absent)."""
    cfg_path = Path(model_dir) / "config.json"
    try:
        cfg: dict[str, Any] = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return None
    return speakers_from_config(cfg)


def speakers_from_config(cfg: dict[str, Any]) -> list[str] | None:
    settings = cfg.get("speaker_settings")
    if not isinstance(settings, dict):
        return None
    speakers = settings.get("speaker_list")
    if not isinstance(speakers, list) or not speakers:
        return None
    return [str(s) for s in speakers]


def language_tags_from_config(cfg: dict[str, Any]) -> list[str] | None:
    """KaniTTS-2 language tags from ``config.json``'s ``language_settings``
    (``{"status": "available_language_tags", "language_tags_list": [...]}``); None when the
    model lists none."""
    settings = cfg.get("language_settings")
    if not isinstance(settings, dict) or settings.get("status") != "available_language_tags":
        return None
    tags = settings.get("language_tags_list")
    if not isinstance(tags, list):
        return None
    out = [str(tag).strip() for tag in tags if str(tag).strip()]
    return out or None


def read_language_tags(model_dir: str | Path) -> list[str] | None:
    """:func:`language_tags_from_config` of a model folder (None when unreadable)."""
    try:
        cfg: dict[str, Any] = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return language_tags_from_config(cfg) if isinstance(cfg, dict) else None


def _tag_key(tag: str) -> str:
    return tag.strip().lower().replace("-", "_")


def pick_language_tag(language: str | None, tags: Sequence[str] | None) -> str | None:
    """The model's tag for a routed ``language``: an exact match (case and ``-``/``_``
    ignored: ``en-US`` -> ``en_us``), else the first tag of the same base language (``en`` ->
    ``en_us``), else None (the prompt then carries no tag)."""
    if not language or not tags:
        return None
    want = _tag_key(language)
    for tag in tags:
        if _tag_key(tag) == want:
            return tag
    base = want.split("_")[0]
    for tag in tags:
        if _tag_key(tag).split("_")[0] == base:
            return tag
    return None


def build_kanitts2_prompt(tokenizer: Tokenizer, text: str, language_tag: str | None,
                          template: PromptTemplate = DEFAULT_TEMPLATE) -> list[int]:
    """A KaniTTS-2 prompt: ``[SOH] + tok("tag: text") + [EOT, EOH]``, or ``tok(text)``
    without a tag (the official package's layout). The voice is not text here: it is the
    request's speaker embedding (``SamplingParams.speaker_embedding``)."""
    tag = language_tag.strip() if language_tag else None
    return build_prompt(tokenizer, text, tag or None, template)


#: The model's opening after the human turn (training layout
#: ``[SOH, BOS, text, EOT, EOH, SOA, SOS, codes..., EOS, EOA]``).
OPENING = (START_OF_AI, START_OF_SPEECH)


def with_opening(prompt_ids: Sequence[int]) -> list[int]:
    """Teacher-force the opening: a prompt that ends with END_OF_HUMAN gets
    ``[START_OF_AI, START_OF_SPEECH]`` appended, so the first generated token is already
    audio (two decode steps fewer before the first frame) and the constraint state after
    the prompt is known. Prompts of other templates are returned unchanged."""
    if prompt_ids and prompt_ids[-1] == END_OF_HUMAN:
        return [*prompt_ids, *OPENING]
    return list(prompt_ids)
