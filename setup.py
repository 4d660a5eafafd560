"""Builds the optional compiled extension `fastformers._C` from csrc/; everything else is in pyproject.toml.

The extension holds the CPU kernels (csrc/cpu/, C++ with run-time instruction-set dispatch) and, on a machine
with nvcc and a CUDA build of torch, the CUDA kernels (csrc/**/*.cu). It needs torch importable at build time:
`pip install --no-build-isolation -e .` (pip's isolated build environment has no torch, and an unpinned torch
there would be a multi-GB CUDA download).

FASTFORMERS_BUILD_EXT=auto (default) builds it when it can and otherwise says why and installs pure Python;
1 forces it (and fails loudly if it cannot); 0 skips it. FASTFORMERS_BUILD_CUDA=auto|0|1 does the same for the
.cu files alone. Without the extension the package still works (torch and Triton backends).
"""

import glob
import os
import shutil
import sysconfig

from setuptools import setup


def _mode(name):
    mode = os.environ.get(name, "auto").lower()
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"{name}={mode!r}: expected auto, 0 or 1")
    return mode


def _skip(mode, name, reason):
    if mode == "1":
        raise SystemExit(f"{name}=1 but the extension cannot be built: {reason}")
    print(f"fastformers: not building the compiled extension fastformers._C ({reason}); the torch and Triton "
          "backends remain")
    return {}


def extension():
    mode, cuda_mode = _mode("FASTFORMERS_BUILD_EXT"), _mode("FASTFORMERS_BUILD_CUDA")
    cpp = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cu = sorted(glob.glob("csrc/**/*.cu", recursive=True))
    if mode == "0" or not cpp:
        return {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        return _skip(mode, "FASTFORMERS_BUILD_EXT",
                     "torch is not importable in the build environment: pip install --no-build-isolation")
    compiler = (sysconfig.get_config_var("CXX") or "c++").split()[0]
    if shutil.which(os.environ.get("CXX", compiler)) is None and shutil.which("c++") is None:
        return _skip(mode, "FASTFORMERS_BUILD_EXT", "no C++ compiler found")
    # -fopenmp: at::parallel_for is an inline OpenMP region in torch's headers; compiled without it, it runs serially
    cxx = ["-O3", "-ffp-contract=fast", "-std=c++17"] + (["-fopenmp"] if torch.backends.openmp.is_available() else [])
    link = ["-fopenmp"] if torch.backends.openmp.is_available() else []
    with_cuda = bool(cu) and cuda_mode != "0" and torch.version.cuda is not None and CUDA_HOME is not None
    if cu and cuda_mode == "1" and not with_cuda:
        raise SystemExit("FASTFORMERS_BUILD_CUDA=1 but torch is a CPU build or nvcc / CUDA_HOME is missing")
    if with_cuda:
        ext = CUDAExtension("fastformers._C", cpp + cu,
                            extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math"]}, extra_link_args=link)
    else:
        ext = CppExtension("fastformers._C", cpp, extra_compile_args=cxx, extra_link_args=link)
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension}}


setup(**extension())
