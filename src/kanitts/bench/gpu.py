"""GPU figures for a run: the card's name, whole-GPU memory peaks (nvidia-smi, every
process) and this process's torch allocator figures. No nvidia-smi / CUDA: None."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any


def gpu_memory_used_mib() -> int | None:
    """Memory in use on GPU 0 (MiB, every process), or None without nvidia-smi."""
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=5)
        return int(q.stdout.split()[0])
    except Exception:  # noqa: BLE001 - no nvidia-smi: no figure
        return None


class GpuMemPeak:
    """Samples nvidia-smi (whole GPU, every process) every ``interval`` s from a thread
    started at construction; ``peak`` in MiB, ``baseline`` the first sample, and
    ``per_process``: each compute process's peak (pid -> {name, mib})."""

    def __init__(self, interval: float = 0.1) -> None:
        self.peak: int | None = None
        self.per_process: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._interval = interval
        self.baseline: int | None = gpu_memory_used_mib()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _query_apps(self) -> None:
        try:
            q = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=5)
        except Exception:  # noqa: BLE001
            return
        for line in q.stdout.splitlines():
            try:
                pid, mib = (x.strip() for x in line.split(","))
                mib_i = int(mib)
            except ValueError:
                continue
            e = self.per_process.get(pid)
            if e is None:
                e = self.per_process[pid] = {"name": process_name(pid), "mib": 0}
            e["mib"] = max(e["mib"], mib_i)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            v = gpu_memory_used_mib()
            if v is not None:
                self.peak = v if self.peak is None else max(self.peak, v)
            if n % 5 == 0:
                self._query_apps()
            n += 1
            self._stop.wait(self._interval)

    def stop(self) -> int | None:
        """Stop sampling; the peak (MiB) or None."""
        self._stop.set()
        self._t.join()
        return self.peak


def process_name(pid: str) -> str:
    """``comm: cmdline`` (cut at 120 characters) of a local process, ``?`` if gone."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        return f"{name}: {cmd[:120]}"
    except OSError:
        return "?"


def torch_mem_mib() -> dict[str, float] | None:
    """This process's torch CUDA allocator figures (MiB), or None without CUDA."""
    try:
        import torch

        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return None
        m = 1 << 20
        return {"allocated": round(torch.cuda.memory_allocated() / m, 1),
                "reserved": round(torch.cuda.memory_reserved() / m, 1),
                "max_allocated": round(torch.cuda.max_memory_allocated() / m, 1),
                "max_reserved": round(torch.cuda.max_memory_reserved() / m, 1)}
    except Exception:  # noqa: BLE001
        return None


def device_name() -> str:
    """``name, memory.total, driver`` of GPU 0 from nvidia-smi, or ``cpu``."""
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=5)
        if q.returncode == 0 and q.stdout.strip():
            return q.stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        pass
    return "cpu"


def cuda_available() -> bool:
    """Whether torch sees a CUDA device in this process."""
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False
