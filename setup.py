"""Builds the optional CUDA extension `fastformers._C` from csrc/; everything else is in pyproject.toml.

FASTFORMERS_BUILD_CUDA=auto (default) builds it when csrc/ has sources, torch is importable in the
build environment (use --no-build-isolation) with CUDA, and nvcc is found; 1 forces it (and fails
loudly if it cannot); 0 skips it. Without it the package is pure Python (torch + Triton backends).
"""

import glob
import os

from setuptools import setup


def cuda_extension():
    mode = os.environ.get("FASTFORMERS_BUILD_CUDA", "auto").lower()
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"FASTFORMERS_BUILD_CUDA={mode!r}: expected auto, 0 or 1")
    sources = sorted(glob.glob("csrc/**/*.cu", recursive=True) + glob.glob("csrc/**/*.cpp", recursive=True))
    if mode == "0" or not sources:
        return {}
    reason = None
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        reason = "torch is not importable in the build environment (pip install --no-build-isolation)"
    else:
        if torch.version.cuda is None:
            reason = "torch is a CPU build"
        elif CUDA_HOME is None:
            reason = "nvcc / CUDA_HOME not found"
    if reason:
        if mode == "1":
            raise SystemExit(f"FASTFORMERS_BUILD_CUDA=1 but the CUDA extension cannot be built: {reason}")
        print(f"fastformers: skipping the CUDA extension ({reason}); Triton and torch backends remain")
        return {}
    ext = CUDAExtension("fastformers._C", sources, extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "--use_fast_math"]})
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension}}


setup(**cuda_extension())
