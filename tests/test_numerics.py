"""cpu_numerics: the environment each mode sets, and that torch in a fresh process obeys it."""

import os
import subprocess
import sys

import pytest
import torch

from tokensafe.runtime.numerics import describe_cpu_numerics, pin_cpu_numerics


def test_avx2_pins_torch_and_mkl_with_strict_cnr():
    env = {"PATH": "/bin", "OMP_NUM_THREADS": "1"}
    assert pin_cpu_numerics("avx2", env) == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}
    assert describe_cpu_numerics(env) == "ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2,STRICT OMP_NUM_THREADS=1"


def test_portable_uses_mkls_vendor_independent_branch():
    env = {}
    assert pin_cpu_numerics("portable", env) == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}
    assert describe_cpu_numerics(env) == "ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=default"


def test_the_hashed_label_names_the_environment_of_the_mode():
    from tokensafe.runtime.numerics import numerics_label

    assert numerics_label("avx2") == "avx2 (ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2,STRICT)"
    assert numerics_label("native") == "native"
    with pytest.raises(ValueError, match="allowed values"):
        numerics_label("fast")


def test_native_leaves_the_environment_alone():
    env = {"MKL_CBWR": "COMPATIBLE"}
    assert pin_cpu_numerics("native", env) == {}
    assert env == {"MKL_CBWR": "COMPATIBLE"}
    assert describe_cpu_numerics(env) == "ATEN_CPU_CAPABILITY=native MKL_CBWR=COMPATIBLE OMP_NUM_THREADS=default"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="cpu_numerics = 'avx1024': allowed values are avx2, portable, native"):
        pin_cpu_numerics("avx1024", {})


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in {"AVX2", "AVX512"}, reason="CPU without AVX2")
def test_a_process_started_after_pinning_runs_the_avx2_kernels():
    env = dict(os.environ)
    pin_cpu_numerics("avx2", env)
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == "AVX2"


def test_cpu_name_says_which_kernels_torch_runs():
    from tokensafe.runtime.numerics import cpu_name

    name = cpu_name()
    assert name.endswith(f", {torch.backends.cpu.get_cpu_capability()} kernels") and len(name) > len(" kernels") + 3
