"""cpu_numerics: the environment each mode sets, and that torch in a fresh process obeys it."""

import os
import subprocess
import sys

import pytest
import torch

from tokensafe.numerics import describe_cpu_numerics, pin_cpu_numerics


def test_avx2_pins_torch_and_mkl():
    env = {"PATH": "/bin"}
    assert pin_cpu_numerics("avx2", env) == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
    assert env == {"PATH": "/bin", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
    assert describe_cpu_numerics(env) == "ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2"


def test_native_leaves_the_environment_alone():
    env = {"MKL_CBWR": "COMPATIBLE"}
    assert pin_cpu_numerics("native", env) == {}
    assert env == {"MKL_CBWR": "COMPATIBLE"}
    assert describe_cpu_numerics(env) == "ATEN_CPU_CAPABILITY=native MKL_CBWR=COMPATIBLE"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="cpu_numerics = 'avx1024': allowed values are avx2, native"):
        pin_cpu_numerics("avx1024", {})


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in {"AVX2", "AVX512"}, reason="CPU without AVX2")
def test_a_process_started_after_pinning_runs_the_avx2_kernels():
    env = dict(os.environ)
    pin_cpu_numerics("avx2", env)
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == "AVX2"


def test_cpu_name_says_which_kernels_torch_runs():
    from tokensafe.numerics import cpu_name

    name = cpu_name()
    assert name.endswith(f", {torch.backends.cpu.get_cpu_capability()} kernels") and len(name) > len(" kernels") + 3
