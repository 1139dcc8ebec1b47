"""Segment timestamps: where each spoken piece of text lies in the output audio.

A segment is ``{"type": "segment", "index", "text", "start", "end", "start_sample",
"end_sample"}``: seconds and samples (at the output rate, end exclusive) of the audio the
client receives, the silence after the piece excluded. SSE streams send one per long-form
chunk, the WebSocket one per piece; ``timestamps: true`` on a non-streamed request returns
the list in the ``X-Kanitts-Segments`` header (base64 of the JSON array).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from kanitts.synthesis import Synthesis
from kanitts.tokens import SAMPLE_RATE

#: Response header carrying a non-streamed request's segments (``timestamps: true``).
SEGMENTS_HEADER = "X-Kanitts-Segments"


def segment_event(index: int, text: str, start: int, end: int, rate: int, *, interrupted: bool = False) -> dict[str, Any]:
    """One segment from sample offsets ``start``..``end`` at ``rate`` Hz (seconds rounded to 1 us)."""
    event: dict[str, Any] = {
        "type": "segment", "index": index, "text": text,
        "start": round(start / rate, 6), "end": round(end / rate, 6),
        "start_sample": start, "end_sample": end,
    }  # fmt: skip
    if interrupted:
        event["interrupted"] = True
    return event


def chunk_segments(synth: Synthesis, speed: float = 1.0, rate: int = SAMPLE_RATE, *, skip: int = 0) -> list[dict[str, Any]]:
    """The segments of ``synth``'s chunks whose audio has been emitted, in order, from the
    ``skip``-th on. Positions are the synthesis timeline (``SAMPLE_RATE``) divided by
    ``speed`` (the tempo change keeps time proportional) and expressed at ``rate`` Hz; the
    text is the chunk's text as spoken (after normalization)."""
    done = [ev for ev in synth.events if ev.start_sample is not None and ev.end_sample is not None]
    done.sort(key=lambda ev: ev.index)
    scale = rate / (SAMPLE_RATE * speed)
    return [
        segment_event(ev.index, ev.text, round(ev.start_sample * scale), round(ev.end_sample * scale), rate)  # type: ignore[operator]
        for ev in done[skip:]
    ]


def segments_header(segments: list[dict[str, Any]]) -> str:
    """``segments`` as the ``X-Kanitts-Segments`` value: base64 (standard, padded) of compact JSON."""
    return base64.b64encode(json.dumps(segments, separators=(",", ":")).encode()).decode()
