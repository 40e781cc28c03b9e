"""Is torch._int_mm (int8 x int8 -> int32) exact on this CPU at every oneDNN ISA level?

    for isa in ALL AVX512_CORE AVX2 SSE41; do ONEDNN_MAX_CPU_ISA=$isa python benchmarks/int_mm_isa_check.py; done

Worst-case operands (rows of +-127) make 16-bit pair sums saturate in kernels without VNNI; the exact
path therefore does not use _int_mm on CPU (see ddcompress/numerics/intlinear.py). Prints one line per run.
"""
import os

import torch

torch.manual_seed(0)
ok = True
for M, K, N in [(64, 512, 1536), (1, 512, 50257), (1024, 1344, 512), (3, 64, 7)]:
    a = torch.randint(-127, 128, (M, K), dtype=torch.int8)
    b = torch.randint(-127, 128, (K, N), dtype=torch.int8)
    a[0], b[:, 0], b[:, 1] = 127, 127, -127
    if M > 1:
        a[1] = -127
    ok &= bool(torch.equal(torch._int_mm(a, b).long(), (a.double() @ b.double()).long()))
print(f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'ALL')} aten={torch.backends.cpu.get_cpu_capability()} "
      f"torch {torch.__version__}: _int_mm exact = {ok}")
