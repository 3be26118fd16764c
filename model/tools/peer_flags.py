"""CMAKE_ARGS for building llama-cpp-python, the bench's llama.cpp peer, so that it runs on this machine: `make peers`.

llama.cpp's default build (GGML_NATIVE) turns on every vector unit the CPU reports. On an Intel Xeon with AMX
(amx_int8, amx_tile) that includes the AMX backend, and llama-cpp-python 0.3.36 segfaults in
ggml_backend_amx_mul_mat on every generation there; turning only the GGML_AMX_* options off does not help while
GGML_NATIVE is on. So: GGML_NATIVE off, each x86 extension on exactly when this CPU has it (AVX-512 on AMD's Zen 4,
not on Zen 2 or 3), AMX always off. Built on the machine that runs it, as `make peers` does, the peer then runs there.

    python -m model.tools.peer_flags    # prints the CMAKE_ARGS
"""

from __future__ import annotations

import sys

# llama.cpp's CMake option for each /proc/cpuinfo flag it depends on.
OPTIONS = {
    "GGML_AVX": ("avx",),
    "GGML_AVX2": ("avx2",),
    "GGML_FMA": ("fma",),
    "GGML_F16C": ("f16c",),
    "GGML_AVX512": ("avx512f", "avx512bw", "avx512dq", "avx512vl"),
    "GGML_AVX512_VBMI": ("avx512_vbmi",),
    "GGML_AVX512_VNNI": ("avx512_vnni",),
    "GGML_AVX512_BF16": ("avx512_bf16",),
}
ALWAYS_OFF = ("GGML_NATIVE", "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cmake_args(flags: set[str]) -> str:
    on = [f"-D{name}={'ON' if all(f in flags for f in needs) else 'OFF'}" for name, needs in OPTIONS.items()]
    return " ".join([f"-D{name}=OFF" for name in ALWAYS_OFF] + on)


if __name__ == "__main__":
    print(cmake_args(cpu_flags()))
    sys.exit(0)
