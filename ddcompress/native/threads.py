"""The process's one thread pool, for work the C kernels do with the GIL released: the exact denoiser's
heads and row blocks (numerics/exact.py) and the streams a decoding step reads (codec/coder.py).

One pool of os.cpu_count() workers, made on first use and kept (a step makes hundreds of parallel calls).
A forked child inherits the parent's pool object but none of its threads, so a new pid gets a new pool.
Tasks never wait on other tasks of the pool, so more tasks than workers only queue, they cannot
deadlock. Which thread runs which task never changes a result: callers split work that is independent.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

_POOL: tuple[int, ThreadPoolExecutor] | None = None  # (pid that made it, the pool)


def pool() -> ThreadPoolExecutor:
    """This process's pool. (Two threads asking first at once may each make one: harmless, since a
    pool starts no thread before its first task and both run what they are given.)"""
    global _POOL
    pid = os.getpid()
    if _POOL is None or _POOL[0] != pid:
        _POOL = (pid, ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="ddc"))
    return _POOL[1]
