"""Benchmarks (``kanitts bench``): speed and memory on full-size random weights.

Lab code lives here, never in serving code. One job per module:

* :mod:`~kanitts.bench.cli` - the ``kanitts bench`` parser and run (``python -m kanitts.bench``);
* :mod:`~kanitts.bench.http_run` / :mod:`~kanitts.bench.engine_run` - the HTTP and engine-only runs;
* :mod:`~kanitts.bench.http_load` / :mod:`~kanitts.bench.engine_load` - one stream and a load level;
* :mod:`~kanitts.bench.stats` - per-stream results and their summaries;
* :mod:`~kanitts.bench.seed` - the seed baseline's emulation;
* :mod:`~kanitts.bench.sampling_paths` - a VllmBackend whose requests pick a sampling path;
* :mod:`~kanitts.bench.round1_logits` - the round-1 logits processor, for comparison;
* :mod:`~kanitts.bench.codec`, :mod:`~kanitts.bench.gpu`, :mod:`~kanitts.bench.assets`,
  :mod:`~kanitts.bench.server_proc`, :mod:`~kanitts.bench.report` - the codec worker, GPU
  memory, random-weight assets, the server subprocess, output lines and files.

The names below are the package's API for scripts and tests; importing it imports neither
torch nor vLLM.
"""

from kanitts.bench.assets import build_full_size, ensure_assets
from kanitts.bench.cli import build_parser, main
from kanitts.bench.codec import codec_throughput, load_codec
from kanitts.bench.engine_load import engine_stream, frames_lenient
from kanitts.bench.http_load import client_processes, http_load
from kanitts.bench.report import append_json
from kanitts.bench.seed import SeedWindows
from kanitts.bench.stats import LoadResult, StreamResult, percentile

__all__ = [
    "LoadResult",
    "SeedWindows",
    "StreamResult",
    "append_json",
    "build_full_size",
    "build_parser",
    "client_processes",
    "codec_throughput",
    "engine_stream",
    "ensure_assets",
    "frames_lenient",
    "http_load",
    "load_codec",
    "main",
    "percentile",
]
