"""`monitor run` under cProfile with a CPU clock of the event loop's thread, switched on by
SIGUSR1 (so start-up, imports and the first runs stay out) and written at exit. Used by
profile_run.py: `python tests/perf/_profiled_daemon.py OUT.prof run --config ...`."""

from __future__ import annotations

import cProfile
import signal
import sys
import time

profiler = cProfile.Profile(time.thread_time)  # CPU of this thread: an idle epoll wait costs nothing
signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())

if __name__ == "__main__":
    from monitor.cli import main

    try:
        code = main(sys.argv[2:])
    finally:
        profiler.disable()
        profiler.dump_stats(sys.argv[1])
    sys.exit(code)
