"""The speaker encoder's fixed facts, importable without torch or transformers (the
configuration reads its defaults from here)."""

from __future__ import annotations

#: Sample rate the encoder expects (Hz).
SPEAKER_SAMPLE_RATE = 16000
#: Hub id of the real encoder used by KaniTTS-2.
DEFAULT_SPEAKER_ENCODER = "nineninesix/speaker-emb-tbr"
#: Embedding size when a config does not say (the real encoder's).
DEFAULT_EMBEDDING_DIM = 128
