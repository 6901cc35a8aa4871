"""Peak and current memory of this process, for the training summary and the efficiency benchmark.

Part of molt-av (Apache-2.0). On a GPU the peak is ``torch.cuda.max_memory_allocated`` (since the last
``reset_peak_memory_stats``); on a CPU it is the process's peak resident set size (``getrusage``), which includes
the weights and the interpreter and only grows.
"""
from __future__ import annotations

import os
import resource
import sys

__all__ = ["current_rss_bytes", "peak_memory_bytes", "peak_rss_bytes"]


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


def current_rss_bytes() -> int | None:
    """Resident set size of this process now, in bytes (``None`` where ``/proc`` is not available)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def peak_memory_bytes(device: str) -> int:
    """CUDA max allocated on a ``cuda`` device, else the peak RSS of this process."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss_bytes()
