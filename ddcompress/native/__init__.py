"""Optional C kernels, compiled for this machine on first use (denoiser.c: the exact denoiser's fused
passes; coder.c: rANS and mixing): the same bits as the Python/torch definitions, only faster;
threads.py: the one thread pool that runs them in parallel (the ctypes calls release the GIL)."""
