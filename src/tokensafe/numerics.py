"""Which CPU code path the stage jobs' float arithmetic takes (config key ``cpu_numerics``).

torch picks its vectorised kernels (ATen) and MKL its GEMM kernels by the CPU's instruction set, and
AVX2 and AVX-512 paths sum in different orders. On the tiny embedded models those last-bit differences
grow through training into different results: the same config and seed gave SFT keyword ASR 0.81 on
an AVX2 machine and 0.55 on an AVX-512 one. Pinning both libraries to their AVX2 path (an environment
setting each reads when it loads) gives the same numbers on any x86-64 CPU with AVX2, at ~10 % more
CPU time on AVX-512 machines. GPU kernels are not affected; other architectures (ARM) use their own
kernels whatever this says.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# mode -> environment the libraries read at load time. 'native' leaves the environment alone.
CPU_NUMERICS_ENV: dict[str, dict[str, str]] = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"},
    "native": {},
}


def pin_cpu_numerics(mode: str, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the environment of ``mode`` in ``environ`` (default ``os.environ``, which every job started
    afterwards inherits); returns what was set. Must run before torch is imported to affect a process."""
    if mode not in CPU_NUMERICS_ENV:
        raise ValueError(f"cpu_numerics = {mode!r}: allowed values are {', '.join(CPU_NUMERICS_ENV)}")
    env = os.environ if environ is None else environ
    env.update(CPU_NUMERICS_ENV[mode])
    return dict(CPU_NUMERICS_ENV[mode])


def describe_cpu_numerics(environ: MutableMapping[str, str] | None = None) -> str:
    """The settings in effect, for a job's log (read from the environment: no torch import needed)."""
    env = os.environ if environ is None else environ
    names = sorted({k for settings in CPU_NUMERICS_ENV.values() for k in settings})
    return " ".join(f"{k}={env.get(k, 'native')}" for k in names)


def cpu_name() -> str:
    """The CPU's model name and the kernels torch runs on it (e.g. ``AMD EPYC, AVX512 kernels``), for
    benchmark records; imports torch."""
    import platform

    import torch

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {torch.backends.cpu.get_cpu_capability()} kernels"
