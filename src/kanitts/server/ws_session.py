"""One speech WebSocket session: text pieces in, one continuous audio stream out.

:class:`SpeechSession` is transport-free: the route (:mod:`kanitts.server.ws`) feeds it
client messages and gives it an :class:`Outbox`. Text deltas go through a
:class:`~kanitts.text.incremental.TextCutter`; every piece it cuts becomes one speech
request through the same operation as ``POST /v1/audio/speech`` (``speak``, which
validates, routes, normalizes and plans it) and starts generating as soon as its
predecessor has produced audio (at most ``ahead`` pieces beyond the one playing), so
generation is pipelined while audio leaves strictly in order.

Joins are the synthesizer's (:mod:`kanitts.synthesis`): every piece after the first audio
of the session fades in over ``FADE_SECONDS``, every piece fades out over the same, and
exactly ``silence_seconds`` of zeros separate two pieces (inserted after speed change, so
the gap is exact at any speed). All pieces feed one encoder, so the client receives one
continuous stream in the session's format. After each piece a ``segment`` event says
where it lies in that stream (samples of the PCM fed to the encoder).

``cancel`` drops the buffered text and cancels every piece's task (closing its PCM
iterator, which aborts its engine requests within a step), then reports the piece cut
short as an ``interrupted`` segment; the session goes on. The audio, segments and usage
depend only on the pieces (so only on the text and the flush points), never on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from kanitts.audio import StreamEncoder
from kanitts.server.errors import APIError
from kanitts.server.speech import Speech
from kanitts.server.ws_protocol import SessionStart, audio_event, error_event, segment_event
from kanitts.synthesis import FADE_SECONDS, SynthesisError, Usage
from kanitts.text.incremental import TextCutter
from kanitts.tokens import SAMPLE_RATE

logger = logging.getLogger(__name__)

#: Turns one piece of text into a planned speech request (``Speaker.speak`` without a slot).
SpeakPiece = Callable[[str, int], Awaitable[Speech]]

_END = object()
# Encoder calls on more samples than this run in a worker thread (as encode_stream does).
_INLINE_SAMPLES = 4096


class Outbox(Protocol):
    async def send_json(self, event: dict[str, Any]) -> None: ...
    async def send_bytes(self, data: bytes) -> None: ...


def speech_rate(speech: Speech) -> int:
    """The sample rate of ``speech.pcm()`` in Hz: the output rate the speech operation chose
    (the request's ``sample_rate``, else 24,000 for pcm, else the model's 22,050)."""
    return int(speech.rate)


@dataclass
class Piece:
    """One cut piece of text and its generation (``queue``: PCM chunks, then ``_END`` or an error)."""

    index: int
    text: str
    cut_at: float
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    speech: Speech | None = None
    has_audio: bool = False
    finished: bool = False


class SpeechSession:
    """The state of one session (see the module docstring).

    ``speak`` builds a piece's :class:`Speech` from its text and the session options;
    ``silence_seconds`` is the gap between pieces; ``ahead`` bounds the pieces generating
    beyond the one playing. Call :meth:`text`, :meth:`flush`, :meth:`cancel`, then
    :meth:`finish` (normal end) or :meth:`abort` (disconnect, time limits).
    """

    def __init__(
        self,
        options: SessionStart,
        speak: SpeakPiece,
        out: Outbox,
        *,
        cutter: TextCutter,
        silence_seconds: float,
        ahead: int = 2,
    ) -> None:
        self.options = options
        self._speak = speak
        self._out = out
        self._cutter = cutter
        self.silence_seconds = silence_seconds
        self.ahead = max(0, ahead)
        self.usage = Usage()
        self.samples = 0  # PCM samples fed to the encoder so far
        self.segments = 0
        self.chars = 0
        self.ttfa: float | None = None  # first cut -> first audio sent, seconds
        self.rate: int | None = None
        self.route: Any = None
        self._pending: deque[Piece] = deque()
        self._next_index = 0
        self._first_cut: float | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._encoder: StreamEncoder | None = None
        self._playing: Piece | None = None
        self._playing_start = 0
        self._player = self._start_player()
        self._send_lock = asyncio.Lock()
        self._pinned: dict[str, Any] = {}  # language and voice of the first piece, kept for all
        #: When the session last had nothing to speak (``time.perf_counter()``).
        self.idle_since = time.perf_counter()

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio sent so far."""
        return round(self.samples / self.rate, 6) if self.rate else 0.0

    @property
    def pending_text(self) -> str:
        """Text received but not cut into a piece yet."""
        return self._cutter.pending

    @property
    def busy(self) -> bool:
        """True while pieces are queued, generating or playing."""
        return bool(self._pending)

    # -- client messages ---------------------------------------------------------------------
    def text(self, delta: str) -> None:
        """Buffer a delta; start every piece it completes."""
        self.chars += len(delta)
        self._add(self._cutter.feed(delta))

    def flush(self) -> None:
        """Cut whatever is buffered into a piece now."""
        self._add(self._cutter.flush())

    async def cancel(self) -> None:
        """Barge-in: drop the buffer and every piece; report the interrupted one; keep going."""
        self._cutter.clear()
        await self._stop_all(report=True)
        self._player = self._start_player()
        await self.send({"type": "cancelled", "audio_end": self._seconds(self.samples),
                          "audio_end_sample": self.samples})

    async def finish(self) -> None:
        """Speak the rest of the buffer, wait for every piece, send the encoder's tail."""
        self.flush()
        self._closing = True
        self._wake.set()
        await self._player
        if self._encoder is not None:
            tail = await asyncio.to_thread(self._encoder.flush)
            if tail:
                await self._send_audio(tail)
            self._encoder.close()
            self._encoder = None

    async def abort(self) -> None:
        """Stop everything now (disconnect, time limit): engine requests are aborted."""
        await self._stop_all(report=False)
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None

    # -- pieces -----------------------------------------------------------------------------
    def _add(self, texts: list[str]) -> None:
        now = time.perf_counter()
        for text in texts:
            if not any(ch.isalnum() for ch in text):
                continue  # punctuation only: nothing to say
            if self._first_cut is None:
                self._first_cut = now
            self._pending.append(Piece(self._next_index, text, now))
            self._next_index += 1
        self._launch()
        self._wake.set()

    def _launch(self) -> None:
        """Start pieces in order: at most ``ahead`` beyond the one playing, each once its
        predecessor has audio (so the first piece never shares the engine with the second)."""
        for k, piece in enumerate(self._pending):
            if piece.task is not None:
                continue
            if k > self.ahead:
                return
            if k > 0:
                prev = self._pending[k - 1]
                if not (prev.has_audio or prev.finished):
                    return
            piece.task = asyncio.create_task(self._produce(piece), name=f"ws-piece{piece.index}")

    async def _produce(self, piece: Piece) -> None:
        try:
            speech = await self._speak(piece.text, piece.index)
            piece.speech = speech
            if not self._pinned:
                self.route = speech.route
                self._pinned = {"language": speech.route.language, "voice": speech.route.voice}
            async with contextlib.aclosing(speech.pcm()) as pcm:  # type: ignore[type-var]
                async for chunk in pcm:
                    piece.queue.put_nowait(chunk)
                    if not piece.has_audio and chunk.size:
                        piece.has_audio = True
                        self._launch()
            piece.queue.put_nowait(_END)
        except (APIError, SynthesisError) as exc:
            piece.queue.put_nowait(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported to this session only
            logger.exception("websocket piece %d failed", piece.index)
            piece.queue.put_nowait(SynthesisError(f"synthesis failed: {exc}"))
        finally:
            piece.finished = True
            if piece.speech is not None:
                u = piece.speech.synthesis.usage
                self.usage.input_tokens += u.input_tokens
                self.usage.output_tokens += u.output_tokens
            self._launch()

    def pinned(self) -> dict[str, Any]:
        """Language and voice every later piece uses (those of the first piece's route)."""
        return dict(self._pinned)

    # -- playing ----------------------------------------------------------------------------
    def _start_player(self) -> asyncio.Task[None]:
        task = asyncio.create_task(self._play(), name="ws-player")
        task.add_done_callback(_log_failure)
        return task

    async def _play(self) -> None:
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
            piece = self._pending[0]
            self._launch()
            await self._play_piece(piece)
            self._pending.popleft()
            if not self._pending:
                self.idle_since = time.perf_counter()
            self._launch()

    async def _play_piece(self, piece: Piece) -> None:
        fade_n = int(FADE_SECONDS * (self.rate or SAMPLE_RATE))
        held: np.ndarray | None = None
        started = False
        while True:
            item = await piece.queue.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                if started:  # what was heard of it, then the error
                    self._playing = None
                    await self.send(segment_event(piece.index, piece.text, self._playing_start, self.samples,
                                                  self._rate, interrupted=True))
                    self.segments += 1
                if isinstance(item, APIError):
                    await self.send(error_event(item.status, item.message, param=item.param, code=item.code))
                else:
                    await self.send(error_event(500, str(item), code="synthesis_failed"))
                return
            pcm: np.ndarray = item
            if not pcm.size:
                continue
            if not started:
                started = True
                if self.rate is None and piece.speech is not None:
                    self.rate = speech_rate(piece.speech)
                    fade_n = int(FADE_SECONDS * self.rate)
                if self.samples:  # not the session's first audio: silence, then a fade-in
                    await self._emit(np.zeros(int(round(self.silence_seconds * self._rate)), np.float32))
                    pcm = pcm.copy()
                    n = min(fade_n, pcm.size)
                    pcm[:n] *= _ramp(fade_n)[:n]
                self._playing, self._playing_start = piece, self.samples
            if held is not None:
                pcm = np.concatenate([held, pcm])
            held, out = (pcm[-fade_n:], pcm[:-fade_n]) if pcm.size > fade_n else (pcm, None)
            if out is not None and out.size:
                await self._emit(out)
        if not started:
            return
        if held is not None and held.size:
            await self._emit(held * _ramp(fade_n)[::-1][-held.size:])
        self._playing = None
        await self.send(segment_event(piece.index, piece.text, self._playing_start, self.samples, self._rate))
        self.segments += 1

    async def _emit(self, pcm: np.ndarray) -> None:
        if self._encoder is None:
            self._encoder = StreamEncoder(self.options.response_format, self._rate, streaming=True)
        if self.options.response_format in ("pcm", "wav") or pcm.size <= _INLINE_SAMPLES:
            data = self._encoder.encode(pcm)
        else:
            data = await asyncio.to_thread(self._encoder.encode, pcm)
        self.samples += int(pcm.size)
        if data:
            if self.ttfa is None and self._first_cut is not None:
                self.ttfa = time.perf_counter() - self._first_cut
            await self._send_audio(data)

    async def _stop_all(self, *, report: bool) -> None:
        pieces = list(self._pending)
        self._pending.clear()  # first: a cancelled piece's task must not launch the next one
        self._player.cancel()
        tasks = [p.task for p in pieces if p.task is not None]
        for t in tasks:
            t.cancel()
        for t in [self._player, *tasks]:
            with contextlib.suppress(BaseException):
                await t
        cut = self._playing
        self._playing = None
        self.idle_since = time.perf_counter()
        if cut is not None and report:
            await self.send(segment_event(cut.index, cut.text, self._playing_start, self.samples,
                                           self._rate, interrupted=True))
            self.segments += 1

    # -- sending ----------------------------------------------------------------------------
    @property
    def _rate(self) -> int:
        return self.rate or SAMPLE_RATE

    def _seconds(self, samples: int) -> float:
        return round(samples / self._rate, 6)

    async def _send_audio(self, data: bytes) -> None:
        if self.options.audio == "binary":
            async with self._send_lock:
                await self._out.send_bytes(data)
        else:
            await self.send(audio_event(data))

    async def send(self, event: dict[str, Any]) -> None:
        async with self._send_lock:
            await self._out.send_json(event)


def _ramp(n: int) -> np.ndarray:
    """The synthesizer's fade-in ramp: ``n`` steps that never reach 0 (float32)."""
    return (np.arange(1, n + 1, dtype=np.float32) / (n + 1)).astype(np.float32)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("websocket player stopped: %r", task.exception())
