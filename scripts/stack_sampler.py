"""Run a Python module with a sampling profiler thread beside it (no ptrace needed).

    python scripts/stack_sampler.py --out stacks.txt --interval 0.005 --window-file win -- -m kanitts.cli serve ...

Every ``--interval`` seconds the sampler reads every other thread's Python stack
(``sys._current_frames``) and counts it as one collapsed line ``thread;file:func;...``
(the format flamegraph tools read). It only counts while ``--window-file`` exists (so a
benchmark can profile just one load level by writing a label into that file and removing
it after; each line starts with that label), and writes
the counts to ``--out`` every 5 s and at exit. Sampling needs the GIL, so a thread that holds
it for long stretches is seen less often than it runs: read the counts as "where Python
time goes", not as exact CPU shares. A measuring tool, not product code.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import os
import runpy
import signal
import sys
import threading
import time


def _collapse(frame) -> str:  # type: ignore[no-untyped-def]
    parts = []
    while frame is not None:
        code = frame.f_code
        parts.append(f"{os.path.basename(code.co_filename)}:{code.co_name}")
        frame = frame.f_back
    return ";".join(reversed(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--interval", type=float, default=0.005)
    ap.add_argument("--window-file", default=None, help="sample only while this file exists; its text labels the samples")
    ap.add_argument("target", nargs=argparse.REMAINDER, help="-- -m module args... or -- script.py args...")
    a = ap.parse_args()
    target = [t for t in a.target if t != "--"] if a.target[:1] == ["--"] else a.target
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def dump() -> None:
        with lock:
            lines = [f"{k} {v}" for k, v in counts.most_common()]
        with open(a.out + ".tmp", "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(a.out + ".tmp", a.out)

    def sample() -> None:
        me = threading.get_ident()
        last = time.monotonic()
        while True:
            time.sleep(a.interval)
            label = "all"
            if a.window_file is not None:
                try:
                    with open(a.window_file) as f:
                        label = f.read().strip() or "window"
                except OSError:
                    label = ""
            if label:
                names = {t.ident: t.name for t in threading.enumerate()}
                frames = sys._current_frames()
                with lock:
                    for ident, frame in frames.items():
                        if ident != me:
                            counts[f"{label};{names.get(ident, ident)};{_collapse(frame)}"] += 1
            if time.monotonic() - last > 5:
                dump()
                last = time.monotonic()

    threading.Thread(target=sample, name="stack-sampler", daemon=True).start()
    atexit.register(dump)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if target[0] == "-m":
        sys.argv = [target[1], *target[2:]]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = target
        runpy.run_path(target[0], run_name="__main__")


if __name__ == "__main__":
    main()
