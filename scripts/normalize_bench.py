"""Normalizer benchmark: share of corpus rows right and time per sentence, per language.

    PYTHONPATH=src python scripts/normalize_bench.py [--repeat 20] [--json out.json]

Reads tests/normalization/{en,es,de}.tsv (kind, input, expected), runs
``kanitts.text.normalize`` on every input (after one warm-up pass that builds the rule
tables) ``--repeat`` times and prints, per language: rows right / rows, and the median
and 99th percentile of the time of one ``normalize`` call (one corpus row, a sentence).
When ``nemo_text_processing`` is importable the same rows go through its
``Normalizer(input_case="cased", lang=...)`` too (grammar build time reported apart);
it is a benchmark comparison only, never a dependency.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "normalization"
LANGS = ("en", "es", "de")

logger = logging.getLogger("normalize_bench")


#: The inputs of issue 16's table (what each system reads them as is printed with --table).
ISSUE_ROWS = [
    ("en", "There were 1234 people."), ("en", "Add 1/2 cup of flour."), ("en", "Add 3/4 cup."),
    ("es", "Añade 1/2 taza."), ("es", "Hay 10.000.000 de habitantes."), ("en", "It's 1.59 p.m."),
    ("en", "We meet at 3.30pm today."), ("en", "### Heading\nRead [link](https://x.y) and `code`."),
    ("es", "Hay 1000000 habitantes"), ("es", "Cuesta $1.500."), ("en", "Call +1 555 123 4567."),
    ("en", "Call 555.123.4567."), ("en", "Open localhost:8080."), ("en", "Ping 192.168.1.1 now."),
]


def load(lang: str) -> list[tuple[str, str]]:
    rows = []
    for line in (CORPUS / f"{lang}.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            _kind, text, expected = line.split("\t")
            rows.append((text.replace("\\n", "\n"), expected.replace("\\n", "\n")))
    return rows


def measure(fn: Callable[[str], str], rows: list[tuple[str, str]], repeat: int) -> dict[str, float]:
    """Right share (first pass) and per-call time quantiles (ms) over ``repeat`` passes."""
    right = sum(1 for text, expected in rows if fn(text) == expected)
    times: list[float] = []
    cpu: list[float] = []
    for _ in range(repeat):
        for text, _ in rows:
            c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
            fn(text)
            times.append((time.perf_counter_ns() - t0) / 1e6)
            cpu.append((time.thread_time_ns() - c0) / 1e6)
    times.sort()
    cpu.sort()
    p99 = min(len(times) - 1, int(0.99 * len(times)))
    return {
        "rows": len(rows),
        "right": right,
        "right_share": right / len(rows),
        "median_ms": statistics.median(times),
        "p99_ms": times[p99],
        "max_ms": times[-1],
        "cpu_median_ms": statistics.median(cpu),
        "cpu_p99_ms": cpu[p99],
        "calls": len(times),
    }


def ours(lang: str) -> Callable[[str], str]:
    from kanitts.text import normalize

    return lambda text: normalize(text, lang)


def nemo(lang: str) -> tuple[Callable[[str], str], float] | None:
    try:
        from nemo_text_processing.text_normalization.normalize import Normalizer
    except ImportError:
        return None
    t0 = time.perf_counter()
    norm = Normalizer(input_case="cased", lang=lang)
    build_s = time.perf_counter() - t0
    return (lambda text: norm.normalize(text, verbose=False)), build_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="timed passes over each corpus (default 20)")
    ap.add_argument("--nemo-repeat", type=int, default=1, help="timed passes for nemo-text-processing")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--langs", default=",".join(LANGS), help="comma-separated subset of en,es,de")
    ap.add_argument("--table", action="store_true", help="also print each system's reading of issue 16's table")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    results: dict[str, dict] = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                                "python": platform.python_version(), "languages": {}}
    load_avg = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results["load_average_1min"] = load_avg
    results["cpus"] = os.cpu_count()
    logger.info(f"{os.cpu_count()} CPUs, load average {load_avg:.1f}; times per normalize call "
                "(wall clock, then this thread's CPU time)")
    header = (f"{'lang':4} {'system':20} {'right':>9} {'share':>7} {'median ms':>10} {'p99 ms':>8} "
              f"{'cpu med':>8} {'cpu p99':>8}")
    logger.info(header)
    langs = [code for code in args.langs.split(",") if code in LANGS]
    table: list[dict[str, str]] = []
    for lang in langs:
        rows = load(lang)
        fn = ours(lang)
        t0 = time.perf_counter()
        fn("warm up 1,234 $5 ## x")  # builds and caches the language's rules
        cold_ms = (time.perf_counter() - t0) * 1000
        r = measure(fn, rows, args.repeat)
        r["first_call_ms"] = cold_ms
        results["languages"][lang] = {"kanitts": r}
        logger.info(f"{lang:4} {'kanitts':20} {r['right']:>4}/{r['rows']:<4} {r['right_share']:>7.1%} "
                    f"{r['median_ms']:>10.3f} {r['p99_ms']:>8.3f} {r['cpu_median_ms']:>8.3f} {r['cpu_p99_ms']:>8.3f}"
                    f"  (first call {cold_ms:.0f} ms)")
        other = nemo(lang)
        issue = [text for code, text in ISSUE_ROWS if code == lang] if args.table else []
        for text in issue:
            table.append({"lang": lang, "input": text, "kanitts": fn(text)})
        if other is None:
            results["languages"][lang]["nemo_text_processing"] = "not installed"
            continue
        nfn, build_s = other
        for row in table:
            if row["lang"] == lang:
                row["nemo_text_processing"] = nfn(row["input"])
        n = measure(nfn, rows, args.nemo_repeat)
        n["grammar_build_s"] = build_s
        results["languages"][lang]["nemo_text_processing"] = n
        logger.info(f"{lang:4} {'nemo-text-processing':20} {n['right']:>4}/{n['rows']:<4} {n['right_share']:>7.1%} "
                    f"{n['median_ms']:>10.3f} {n['p99_ms']:>8.3f} {n['cpu_median_ms']:>8.3f} {n['cpu_p99_ms']:>8.3f}  (grammars built in {build_s:.1f} s)")
    for row in table:
        logger.info(f"{row['lang']} {row['input']!r}\n   kanitts: {row['kanitts']!r}"
                    + (f"\n   nemo:    {row['nemo_text_processing']!r}" if "nemo_text_processing" in row else ""))
    results["issue_table"] = table
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
