"""Which CPU code path the stage jobs' float arithmetic takes (config key ``cpu_numerics``).

torch picks its vectorised kernels (ATen) by the CPU's instruction set and MKL its GEMM kernels by the
CPU's instruction set *and vendor*; paths that sum in another order give other last bits, and on the
tiny embedded models those grow through training into other results. What each mode pins, and what
that buys (measured on an AMD EPYC Zen 4 and an Intel Xeon with AMX; docs/numerics.md):

* ``avx2`` (default): ``ATEN_CPU_CAPABILITY=avx2`` and ``MKL_CBWR=AVX2,STRICT``. Same config and seed on
  the same machine: byte-identical outputs. Across machines of one CPU vendor with AVX2: the same
  kernels (MKL documents CNR for Intel CPUs; AVX-512 AMD machines ran the AVX2 machine's table exactly).
  Across vendors: **not** identical - MKL documents that on non-Intel CPUs a CNR branch falls back to
  its AUTO branch, and the Intel Xeon's default run differed from the AMD EPYC's from the first model on.
  ``STRICT`` makes MKL's GEMM results independent of the thread count (plain CNR needs a fixed count).
* ``portable``: ``MKL_CBWR=COMPATIBLE`` (MKL's SSE2 branch, which MKL documents as giving the same
  results on Intel and compatible x86 CPUs) with ATen's AVX2 kernels (torch's own code: the same on any
  x86-64 CPU with AVX2). Training is about 2x slower here, its GEMMs depend on the thread count (STRICT
  does not apply to that branch: 1 and 2 threads train different weights here), and the cross-vendor
  identity rests on MKL's documentation: it has not been measured across vendors by this project.
* ``native``: each CPU's fastest kernels; the environment is left alone.

Whatever the mode, torch's own parallel reductions (a full ``sum``) depend on the thread count, so every
stage runs with its rule's thread count (``resources.<family>.threads``, which Snakemake exports as
``OMP_NUM_THREADS``), and anything that replays a stage must use the same count. GPU kernels and other
architectures (ARM) are not affected by this setting.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# mode -> environment the libraries read at load time. 'native' leaves the environment alone.
CPU_NUMERICS_ENV: dict[str, dict[str, str]] = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"},
    "portable": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"},
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


def numerics_label(mode: str) -> str:
    """``mode`` with the environment it sets, e.g. ``avx2 (ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2,STRICT)``: what
    the hashed settings of every model stage record, so that a changed pin reruns the work it affects."""
    if mode not in CPU_NUMERICS_ENV:
        raise ValueError(f"cpu_numerics = {mode!r}: allowed values are {', '.join(CPU_NUMERICS_ENV)}")
    env = CPU_NUMERICS_ENV[mode]
    return f"{mode} ({' '.join(f'{k}={v}' for k, v in sorted(env.items()))})" if env else mode


def describe_cpu_numerics(environ: MutableMapping[str, str] | None = None) -> str:
    """The settings in effect, for a job's log (read from the environment: no torch import needed)."""
    env = os.environ if environ is None else environ
    names = sorted({k for settings in CPU_NUMERICS_ENV.values() for k in settings})
    threads = env.get("OMP_NUM_THREADS", "default")
    return " ".join(f"{k}={env.get(k, 'native')}" for k in names) + f" OMP_NUM_THREADS={threads}"


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
