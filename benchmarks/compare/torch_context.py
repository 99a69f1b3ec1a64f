"""What the PyTorch side of a comparison ran on, printed above its figures: the torch version and
interpreter, its thread counts, the CPU capability it dispatches to, and the BLAS and oneDNN its
build uses (from torch.__config__.show()). Imported by the comparison scripts beside it."""

import sys

import torch


def print_torch_context():
    print(f"torch {torch.__version__} ({sys.executable})")
    print(f"threads: {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})")
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    if capability is not None:
        print(f"cpu capability: {capability()}")
    print(f"mkldnn (oneDNN) available: {torch.backends.mkldnn.is_available()}, "
          f"MKL available: {torch.backends.mkl.is_available()}")
    # The library lines, and the BLAS_INFO / USE_MKLDNN entries of the long "Build settings" line.
    for line in torch.__config__.show().splitlines():
        text = line.strip()
        if text.startswith("- Build settings"):
            keep = [s.strip() for s in text.split(",")
                    if s.strip().split("=")[0] in ("BLAS_INFO", "LAPACK_INFO", "USE_MKL",
                                                   "USE_MKLDNN", "USE_OPENMP")]
            print("config: " + ", ".join(keep))
        elif any(word in text for word in ("MKL", "Math Kernel", "oneDNN", "OpenBLAS", "BLAS",
                                           "OpenMP")):
            print("config: " + text.lstrip("- "))
