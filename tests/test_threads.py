"""native/threads.py: the one process-wide pool that the exact denoiser and the coder share."""
from __future__ import annotations

import os
import threading

import pytest
import torch

from ddcompress.codec import rans
from ddcompress.codec.coder import Coder
from ddcompress.codec.plan import Plan
from ddcompress.native import threads
from ddcompress.numerics.exact import ExactDenoiser


def test_one_pool_per_process_sized_by_the_cpus():
    pool = threads.pool()
    assert threads.pool() is pool and pool._max_workers == (os.cpu_count() or 1)
    assert pool.submit(lambda: threading.current_thread().name).result().startswith("ddc")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_gets_a_pool_of_its_own():
    """The child inherits the pool object but not its threads: an idle worker of the parent's would
    never take the child's task (it would hang), so a new pid makes a new pool."""
    parent = threads.pool()
    parent.submit(int).result()  # a worker now idles in the parent
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 if its own pool ran the task
        ok = False
        try:
            child = threads.pool()
            ok = child is not parent and child.submit(os.getpid).result(timeout=30) == os.getpid()
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert threads.pool() is parent  # the parent's is untouched


def test_the_denoiser_and_the_coder_use_the_shared_pool(tiny_lm):
    ex = ExactDenoiser(tiny_lm.cfg, tiny_lm.tensors, "cpu")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ran = {}
        ex._parallel(lambda first, step: ran.setdefault(first, threading.current_thread()), 2)
    finally:
        torch.set_num_threads(before)
    assert sorted(ran) == [0, 1] and ran[0] is threading.current_thread()  # the caller takes the first share
    assert ran[1] in threads.pool()._threads  # the second ran on the shared pool
    if (os.cpu_count() or 1) > 1 and rans._lib() is not None:  # several streams on the C decoder's threads
        assert Coder(tiny_lm.exact(), Plan(4, "sine"), seed=0)._pool(4) is threads.pool()
