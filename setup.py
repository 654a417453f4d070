# Builds liveact_kernels._C from csrc/: C++17 CPU kernels (OpenMP, vectorised for the build machine) and,
# when a CUDA build of torch and nvcc are present, the CUDA kernels for TORCH_CUDA_ARCH_LIST.
# Every build switch is read in the one block below. No network access at build time.
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

# ---------------------------------------------------------------- build switches (the only env reads)
SKIP_CUDA_BUILD = os.environ.get("LIVEACT_SKIP_CUDA_BUILD", "0") not in ("", "0", "false", "FALSE")
# CI sets this: a build that would silently fall back to the CPU extension fails instead
REQUIRE_CUDA_BUILD = os.environ.get("LIVEACT_REQUIRE_CUDA_BUILD", "0") not in ("", "0", "false", "FALSE")
CPU_ARCH = os.environ.get("LIVEACT_CPU_ARCH", "native")  # value of -march; e.g. x86-64-v3 for portable wheels
TORCH_CUDA_ARCH_LIST = os.environ.get("TORCH_CUDA_ARCH_LIST")  # standard torch variable
DEFAULT_CUDA_ARCHS = "8.0;8.9;9.0a"  # Ampere (bf16 paths), Ada and Hopper (FP8 paths)
MAX_JOBS = os.environ.get("MAX_JOBS")
NVCC_THREADS = os.environ.get("NVCC_THREADS")
NVCC_APPEND_FLAGS = os.environ.get("LIVEACT_NVCC_APPEND_FLAGS", "")
CXX_APPEND_FLAGS = os.environ.get("LIVEACT_CXX_APPEND_FLAGS", "")
USER_CUDA_HOME = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
# ----------------------------------------------------------------------------------------------------

HERE = os.path.dirname(os.path.abspath(__file__))


def _find_cuda_home():
    """The folder that really holds include/cuda_runtime.h. The `nvcc` on PATH may be a wrapper script
    outside the toolkit, which makes torch guess a CUDA_HOME without headers."""
    cands = []
    if USER_CUDA_HOME:
        cands.append(USER_CUDA_HOME)
    nvcc = shutil.which("nvcc")
    if nvcc:
        cands.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
        try:  # a one-line `exec /path/to/nvcc "$@"` wrapper
            with open(nvcc, "rb") as f:
                head = f.read(4096).decode("utf-8", "replace")
            for tok in head.split():
                if tok.endswith("/bin/nvcc"):
                    cands.append(os.path.dirname(os.path.dirname(tok)))
        except OSError:
            pass
    cands += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True) + ["/opt/cuda"]
    for c in cands:
        if c and os.path.isfile(os.path.join(c, "include", "cuda_runtime.h")) and \
                os.path.isfile(os.path.join(c, "bin", "nvcc")):
            return c
    return None


cuda_home = None if SKIP_CUDA_BUILD else _find_cuda_home()
if cuda_home:
    os.environ["CUDA_HOME"] = cuda_home  # must precede the cpp_extension import, which reads it once

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

build_cuda = False
reason = ""
if SKIP_CUDA_BUILD:
    reason = "LIVEACT_SKIP_CUDA_BUILD is set"
elif torch.version.cuda is None:
    reason = f"torch {torch.__version__} is a CPU-only build"
elif cuda_home is None:
    reason = "no CUDA toolkit (nvcc + include/cuda_runtime.h) was found; set CUDA_HOME"
else:
    build_cuda = True
if not build_cuda:
    if REQUIRE_CUDA_BUILD and not SKIP_CUDA_BUILD:
        sys.exit(f"liveact: LIVEACT_REQUIRE_CUDA_BUILD is set but the CUDA kernels cannot be built: {reason}.")
    print(f"liveact: building the CPU extension only ({reason}).", flush=True)

if build_cuda and not TORCH_CUDA_ARCH_LIST and not torch.cuda.is_available():
    TORCH_CUDA_ARCH_LIST = DEFAULT_CUDA_ARCHS
if build_cuda and TORCH_CUDA_ARCH_LIST:
    os.environ["TORCH_CUDA_ARCH_LIST"] = TORCH_CUDA_ARCH_LIST

if MAX_JOBS is None:  # nvcc needs ~2-4 GB per job: size from cores and memory
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = 8
    os.environ["MAX_JOBS"] = str(max(1, min(os.cpu_count() or 1, int(mem_gb // 4))))
nvcc_threads = NVCC_THREADS or "2"

cpu_sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
cuda_op_sources = [s for s in cpu_sources if s.endswith("_cuda_op.cpp")]
cpu_sources = [s for s in cpu_sources if not s.endswith("_cuda_op.cpp")]
cuda_sources = sorted(glob.glob("csrc/**/*.cu", recursive=True))

# C++20: the headers of torch 2.14 require it (ATen.h errors out below C++20); our kernel headers are C++17.
cxx_flags = ["-O3", "-std=c++20", "-fopenmp", f"-march={CPU_ARCH}", "-fno-math-errno"] + CXX_APPEND_FLAGS.split()
macros = [
    ("LIVEACT_BUILD_CUDA", "1" if build_cuda else "0"),
    ("LIVEACT_CXX_FLAGS", '"' + " ".join(cxx_flags) + '"'),
    ("LIVEACT_CPU_ARCH", '"' + CPU_ARCH + '"'),
    ("LIVEACT_CUDA_ARCHS", '"' + (TORCH_CUDA_ARCH_LIST or "") + '"'),
]
include_dirs = [os.path.join(HERE, "csrc")]
link_args = ["-fopenmp"]

if build_cuda:
    nvcc_flags = ["-O3", "-std=c++20", "--expt-relaxed-constexpr", "-lineinfo", f"--threads={nvcc_threads}",
                  "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
                  "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
                  "-Xptxas=-v", "-Xptxas=-warn-spills"] + NVCC_APPEND_FLAGS.split()
    ext = CUDAExtension(
        "liveact_kernels._C",
        sources=cpu_sources + cuda_op_sources + cuda_sources,
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=link_args,
    )
else:
    ext = CppExtension(
        "liveact_kernels._C",
        sources=cpu_sources,
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=link_args,
    )


class LiveactBuildExt(BuildExtension.with_options(use_ninja=True)):
    """torch's BuildExtension with a persistent object folder per configuration: pip's editable and wheel
    builds otherwise compile in a fresh temporary folder, so that touching one kernel rebuilt all of them.
    ninja then recompiles only the translation units whose sources, headers or flags changed."""

    def finalize_options(self):
        if self.build_temp is None or "build-temp" in os.path.basename(self.build_temp):
            kind = "cuda-" + (TORCH_CUDA_ARCH_LIST or "").replace(";", "_") if build_cuda else "cpu"
            self.build_temp = os.path.join(HERE, "build", f"obj-{kind}-{CPU_ARCH}")
        super().finalize_options()


setup(
    name="liveact",
    version="0.1.0",
    description="Kernels and a streaming model package for real-time, hour-scale audio-driven avatar video",
    packages=find_packages(include=["liveact_kernels", "liveact_kernels.*", "liveact_model", "liveact_model.*"]),
    package_data={"liveact_model": ["assets/*"]},
    ext_modules=[ext],
    cmdclass={"build_ext": LiveactBuildExt},
    entry_points={"console_scripts": ["liveact=liveact_model.cli:main"]},
    python_requires=">=3.10",
    # torch is not listed: the extension is compiled against the torch already installed (--no-build-isolation),
    # and listing it could make pip replace that build. safetensors: checkpoints and the tiny avatar's weights;
    # av + pillow: `liveact generate` (mp4 with audio, images); tqdm: progress bars of train/eval.
    install_requires=["numpy", "safetensors", "tqdm", "av", "pillow"],
)
