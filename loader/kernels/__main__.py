"""`python -m loader.kernels [NVCC]`: rebuild handover.ptx from handover.cu (needs nvcc)."""

import sys

from loader.handover import PTX, build_ptx

PTX.write_text(build_ptx(sys.argv[1] if len(sys.argv) > 1 else "nvcc"))
print(f"wrote {PTX}")
