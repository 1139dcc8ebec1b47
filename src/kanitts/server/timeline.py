"""Where a speech request's time to first audio goes: the stages of its access-log record.

Each stage is a ``time.perf_counter()`` stamp taken once per request (never per frame),
logged in ms since the request arrived at the ASGI app (:mod:`kanitts.server.request_id`),
``None`` when the request never got there. The stages after ``admitted_ms`` are those of
the first text chunk (the one the listener hears first). :data:`STAGES` is the one list of
them, in order; ``kanitts bench`` reads them back from the server's log
(:mod:`kanitts.bench.stages`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kanitts.synthesis import Synthesis

#: The record's timeline keys, in the order a request passes them, with what each marks.
STAGES: dict[str, str] = {
    "handler_ms": "the route handler runs: body read and validated (middleware, JSON, pydantic)",
    "planned_ms": "voice, route, options resolved and the text normalized and planned",
    "admitted_ms": "an admission slot taken (waits here when max_concurrent are running)",
    "start_ms": "the first chunk's task starts (the response began iterating the audio)",
    "prompt_ms": "the first chunk's prompt tokenized",
    "submit_ms": "a codec slot taken and the prompt handed to the engine",
    "ttft_ms": "the engine's first token arrives (queueing, prefill, delivery)",
    "first_frame_ms": "the first complete frame goes to the codec",
    "first_audio_ms": "the codec's first PCM chunk arrives",
    "ttfa_ms": "the first encoded bytes are handed to the server (resample, tempo, encoder)",
    "first_byte_ms": "the server's send of those bytes returned (written to the socket buffer)",
}


def _ms(t: float | None, t0: float) -> float | None:
    return None if not t else round((t - t0) * 1000, 1)


def request_timeline(t0: float, marks: dict[str, float], synth: Synthesis | None) -> dict[str, float | None]:
    """The record's timeline: ``marks`` holds the request-level stamps by stage key
    (``handler_ms``, ``planned_ms``, ``admitted_ms``, ``ttfa_ms``, ``first_byte_ms``); the
    chunk-level ones come from the first text chunk's :class:`~kanitts.synthesis.ChunkEvent`.
    All in ms since ``t0`` (the arrival), rounded to 0.1 ms; keys in :data:`STAGES` order."""
    ev = synth.events[0] if synth is not None and synth.events else None
    chunk = {
        "start_ms": ev.started if ev else None,
        "prompt_ms": ev.prompt_ready if ev else None,
        "submit_ms": ev.submitted if ev else None,
        "ttft_ms": ev.first_token if ev else None,
        "first_frame_ms": ev.first_frame if ev else None,
        "first_audio_ms": ev.first_audio if ev else None,
    }
    return {key: _ms(chunk[key] if key in chunk else marks.get(key), t0) for key in STAGES}
