"""One BLAS thread for the real-time processes (gateway, Python client, benchmarks).

numpy's OpenBLAS keeps a worker thread per core, and after each call the workers busy-wait for
the next one. The gateway makes many small BLAS calls (the streaming resampler and log-mel of every
20 ms host-audio chunk, ~50 a second per session), so its worker never sleeps: `f2f bench latency`
found one OpenBLAS thread using 0.46 of a core for a single session (the gateway's whole process:
1.14 cores, 0.69 with one BLAS thread), on a 2-core machine. These calls are far too small to gain
from a second thread; onnxruntime, mediapipe and the codecs keep their own threads.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)


def limit_blas_threads(threads: int = 1) -> bool:
    """Limit the BLAS libraries loaded in this process (numpy's OpenBLAS) to `threads`, for good.
    -> False (with a warning) when threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log.warning("threadpoolctl is not installed: numpy's BLAS keeps one spinning thread per core")
        return False
    importlib.import_module("numpy")  # load numpy's BLAS first, so that the limit reaches it

    threadpool_limits(limits=threads, user_api="blas")
    return True
