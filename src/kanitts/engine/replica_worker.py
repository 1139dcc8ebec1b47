"""The body of one engine replica process (see :mod:`kanitts.engine.replicas`).

Started with the ``spawn`` start method, so nothing (CUDA context, threads, locks) is
inherited from the front process. It selects its GPU through ``CUDA_VISIBLE_DEVICES``
before anything can initialise CUDA, builds the configured backend (native or vLLM) with
:func:`kanitts.engine.factory.build_local_backend` and then serves requests over one duplex
:func:`multiprocessing.Pipe` connection.

Wire protocol (pickled Python objects, one message = one list of events):

front -> replica: ``("start", rid, prompt_ids, sampling_kwargs)``, ``("abort", rid)``, ``("stop",)``
replica -> front: ``("ready", info)``, ``("tok", rid, ids)``, ``("end", rid)``,
``("err", rid, message)``, ``("stats", stats_dict)``, ``("fatal", message)``

Tokens are batched (:class:`kanitts.engine.replica_pipe.CoalescingSender`), so under load
the cost per message is spread over many streams and tokens.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from kanitts.engine.replica_pipe import CoalescingSender


def replica_main(index: int, conn: Any, settings: Any, model_path: str, share: float,
                 gpu: str | None, heartbeat_interval: float, cpu_threads: int | None = None) -> None:
    """Process entry point. ``gpu``: a CUDA device id to pin this replica to, or None.
    ``cpu_threads``: intra-op threads for this replica (CPU replicas split the cores)."""
    if gpu is not None:
        # Before torch is imported anywhere in this process: the replica sees one GPU.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if cpu_threads:
        os.environ["OMP_NUM_THREADS"] = str(cpu_threads)
        os.environ["MKL_NUM_THREADS"] = str(cpu_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import asyncio
    import logging

    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s [replica {index}] %(name)s: %(message)s",
    )
    try:
        asyncio.run(_serve(index, conn, settings, model_path, share, gpu, heartbeat_interval))
    except KeyboardInterrupt:
        pass
    finally:
        # Never linger: vLLM or transformers may leave non-daemon threads behind.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


async def _serve(index: int, conn: Any, settings: Any, model_path: str, share: float,
                 gpu: str | None, heartbeat_interval: float) -> None:
    import asyncio
    import dataclasses
    import logging
    import traceback

    log = logging.getLogger("kanitts.replica")
    loop = asyncio.get_running_loop()
    sender = CoalescingSender(conn)
    stop = asyncio.Event()
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def reader() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                # The front process is gone (or closed our pipe): shut down.
                loop.call_soon_threadsafe(stop.set)
                threading.Timer(15.0, os._exit, args=(0,)).start()
                return
            loop.call_soon_threadsafe(inbox.put_nowait, msg)

    threading.Thread(target=reader, name="replica-reader", daemon=True).start()
    try:
        from kanitts.engine.base import SamplingParams
        from kanitts.engine.factory import apply_process_env, build_local_backend

        apply_process_env(settings)  # before this process first uses CUDA

        eng = {"data_parallel_size": 1, "gpus": None}
        if gpu is not None and (settings.engine.device == "auto" or settings.engine.device.startswith("cuda")):
            eng["device"] = "cuda"
        local = settings.model_copy(update={"engine": settings.engine.model_copy(update=eng)})
        backend = build_local_backend(local, model_path, share=share)
        await backend.start()
    except BaseException as exc:  # noqa: BLE001 - reported to the front, then exit
        sender.put(("fatal", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"))
        sender.close()
        return

    device = str(getattr(backend, "device", None) or ("cuda" if gpu is not None else "default"))
    sender.put(("ready", {"pid": os.getpid(), "backend": backend.name, "device": device,
                          "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}))
    tasks: dict[str, asyncio.Task[None]] = {}

    async def run(rid: str, prompt: list[int], kw: dict[str, Any]) -> None:
        stream = backend.stream(prompt, SamplingParams(**kw), request_id=rid)
        try:
            async for ids in stream:
                sender.put(("tok", rid, ids))
            sender.put(("end", rid))
        except asyncio.CancelledError:
            pass  # aborted by the front; closing the stream aborts inside the engine
        except Exception as exc:  # noqa: BLE001 - one request only
            log.exception("request %s failed", rid)
            sender.put(("err", rid, f"{type(exc).__name__}: {exc}"))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            tasks.pop(rid, None)

    async def heartbeat() -> None:
        while True:
            st = dataclasses.asdict(backend.stats)
            st["running"] = len(tasks)
            sender.put(("stats", st))
            await asyncio.sleep(heartbeat_interval)

    async def dispatch() -> None:
        while True:
            msg = await inbox.get()
            kind = msg[0]
            if kind == "start":
                _, rid, prompt, kw = msg
                tasks[rid] = asyncio.create_task(run(rid, prompt, kw), name=rid)
            elif kind == "abort":
                t = tasks.get(msg[1])
                if t is not None:
                    t.cancel()
            elif kind == "stop":
                stop.set()
                return

    hb = asyncio.create_task(heartbeat())
    disp = asyncio.create_task(dispatch())
    await stop.wait()
    for t in (hb, disp, *tasks.values()):
        t.cancel()
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    try:
        await asyncio.wait_for(backend.close(), 30)
    except BaseException:  # noqa: BLE001
        log.exception("closing the backend")
    sender.close()
