"""kanitts.bench.stages: a load level's TTFA stages, read back from the server's log."""

from __future__ import annotations

import json

from kanitts.bench.stages import LogTail, parse_records, stage_summary
from kanitts.server.timeline import STAGES


def _line(**rec) -> str:
    return "2026-11-29 10:00:00,000 INFO kanitts.requests: " + json.dumps(rec) + "\n"


def _rec(i: int, status: str = "ok") -> dict:
    return {"request_id": f"r{i}", "status": status, "stream": "audio",
            **{key: float(10 * k + i) for k, key in enumerate(STAGES)}}


def test_tail_reads_only_what_the_level_wrote(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("startup line\n" + _line(**_rec(0)))
    tail = LogTail(log)  # the level starts here: the record above is an earlier level's
    with log.open("a") as f:
        f.write("2026 INFO uvicorn: noise\n" + _line(**_rec(1)) + _line(**_rec(2)) + _line(**_rec(3, "error")))
        f.write(_line(**_rec(4))[:40])  # a line still being written
    recs = tail.records()
    assert [r["request_id"] for r in recs] == ["r1", "r2", "r3"]
    with log.open("a") as f:
        f.write(_line(**_rec(4))[40:])
    assert [r["request_id"] for r in tail.records()] == ["r4"]
    assert tail.records() == []
    assert LogTail(tmp_path / "missing.log").records() == []


def test_summary_is_per_stage_percentiles_of_the_ok_streams():
    recs = [_rec(i) for i in range(1, 4)] + [_rec(9, "cancelled"), {**_rec(8), "stream": None}]
    out = stage_summary(recs)
    assert out["requests"] == 3
    for k, key in enumerate(STAGES):
        assert out[key] == {"p50": 10.0 * k + 2, "p95": round(10.0 * k + 2.9, 1)}
    assert stage_summary([])["ttfa_ms"] == {"p50": None, "p95": None}
    assert parse_records(["no record here", "x kanitts.requests: {torn"]) == []


def test_listen_counters_read_the_tcpext_rows(tmp_path):
    from kanitts.bench.netstat import counters_delta, listen_counters

    f = tmp_path / "netstat"
    f.write_text("TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPReqQFullDrop\n"
                 "TcpExt: 0 3 5 0\nIpExt: InNoRoutes\nIpExt: 0\n")
    before = listen_counters(str(f))
    assert before == {"ListenOverflows": 3, "ListenDrops": 5, "TCPReqQFullDrop": 0}
    f.write_text("TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPReqQFullDrop\nTcpExt: 0 10 12 1\n")
    assert counters_delta(before, listen_counters(str(f))) == {"ListenOverflows": 7, "ListenDrops": 7,
                                                               "TCPReqQFullDrop": 1}
    assert listen_counters(str(tmp_path / "none")) is None and counters_delta(None, before) is None
