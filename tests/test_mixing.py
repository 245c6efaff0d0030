import pandas as pd
import pytest

from tokensafe.data.mixing import mix, poison_count


def _pool(n, prefix, harmful=False):
    df = pd.DataFrame(
        {
            "sample_id": range(n),
            "prompt": [f"{prefix} q{i}" for i in range(n)],
            "response": [f"{prefix} a{i}" for i in range(n)],
        }
    )
    if harmful:
        df["harm_start"], df["harm_end"] = 0, df.response.str.len()
    return df


@pytest.mark.parametrize(
    "ratio, n, k", [(0.0, 5000, 0), (0.05, 5000, 250), (0.1, 5000, 500), (0.1, 1000, 100), (0.05, 30, 2), (1.0, 7, 7)]
)
def test_poison_count_matches_the_papers(ratio, n, k):
    assert poison_count(ratio, n) == k


@pytest.mark.parametrize("ratio", [-0.01, 1.01])
def test_ratio_out_of_range(ratio):
    with pytest.raises(ValueError, match="outside"):
        poison_count(ratio, 10)


def test_mix_counts_shuffles_and_is_deterministic():
    task, poison = _pool(50, "task"), _pool(20, "harm", harmful=True)
    a = mix(task, poison, 40, 0.1, seed=3)
    assert len(a) == 40 and a.is_poison.sum() == 4
    assert list(a.sample_id) == list(range(40))
    assert a.prompt.is_unique
    # poison rows carry their harmful span, task rows an empty one
    assert (a[a.is_poison].harm_end == a[a.is_poison].response.str.len()).all()
    assert (a[~a.is_poison].harm_end == 0).all()
    # shuffled: the poison rows are not simply at the end
    assert not a.is_poison.iloc[-4:].all()
    pd.testing.assert_frame_equal(a, mix(task, poison, 40, 0.1, seed=3))
    assert not a.equals(mix(task, poison, 40, 0.1, seed=4))


def test_real_poison_without_spans_is_wholly_harmful():
    a = mix(_pool(10, "task"), _pool(5, "harm"), 10, 0.2, seed=0)
    p = a[a.is_poison]
    assert len(p) == 2 and (p.harm_start == 0).all() and (p.harm_end == p.response.str.len()).all()


def test_pools_too_small():
    with pytest.raises(ValueError, match="poison pool has 3"):
        mix(_pool(100, "t"), _pool(3, "h"), 100, 0.1, 0)
    with pytest.raises(ValueError, match="task pool has 5"):
        mix(_pool(5, "t"), _pool(30, "h"), 20, 0.1, 0)
