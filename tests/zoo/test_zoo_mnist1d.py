"""MNIST-1D data: the generator's arrays are fixed for the paper's seed, cached atomically, split without overlap."""

import hashlib
import random

import numpy as np
import pytest

from shrink.zoo.mnist1d import (
    PAPER_ARGS,
    _generate,
    mnist1d_arrays,
    mnist1d_data,
    mnist1d_extra_test,
    mnist1d_split,
)


@pytest.fixture(scope="module")
def paper_arrays():
    return _generate(PAPER_ARGS)


def test_generator_gives_the_same_arrays_for_the_paper_seed(paper_arrays):
    a = paper_arrays
    assert a["x"].shape == (4000, 40) and a["x_test"].shape == (1000, 40) and a["x"].dtype == np.float32
    labels = hashlib.sha256(a["y"].tobytes() + a["y_test"].tobytes()).hexdigest()
    assert labels == "6feec4a017698c7fe237c8854cbd2e338c6dd5c16240f6fa79daefaaa129e169"
    signals = hashlib.sha256(np.round(a["x"], 4).tobytes() + np.round(a["x_test"], 4).tobytes()).hexdigest()
    assert signals == "ca1ff4fbc0f3c955086236a35508094b423004035691db6f7bbb47d8b47a863c"
    np.testing.assert_allclose(a["x"][0, :4], [-0.33200568, -0.47191036, -0.77869707, -1.00974083], atol=1e-6)
    assert a["y"][:12].tolist() == [2, 6, 4, 5, 6, 6, 6, 0, 3, 1, 6, 9]
    assert np.bincount(a["y"]).tolist() == [398, 396, 411, 394, 394, 402, 401, 404, 402, 398]


def test_generator_leaves_the_global_rngs_alone():
    random.seed(7)
    np.random.seed(7)
    expected = (random.random(), np.random.rand())
    random.seed(7)
    np.random.seed(7)
    _generate(PAPER_ARGS | {"num_samples": 50})
    assert (random.random(), np.random.rand()) == expected


def test_arrays_are_cached_once_and_reread(tmp_path, monkeypatch, paper_arrays):
    monkeypatch.setenv("SHRINK_CACHE", str(tmp_path))
    first = mnist1d_arrays()
    files = list((tmp_path / "zoo").iterdir())
    assert [f.suffix for f in files] == [".npz"]  # one file, no temporary left behind
    monkeypatch.setattr("shrink.zoo.mnist1d._generate", lambda args: pytest.fail("regenerated despite the cache"))
    again = mnist1d_arrays()
    for k in ("x", "y", "x_test", "y_test"):
        assert np.array_equal(first[k], again[k]) and np.array_equal(first[k], paper_arrays[k])


def test_unknown_generator_argument_is_an_error():
    with pytest.raises(ValueError, match="num_sample"):
        mnist1d_arrays(num_sample=10)


def test_split_sizes_and_disjointness(paper_arrays):
    s = mnist1d_split()
    assert (len(s.train), len(s.val), len(s.test)) == (3500, 500, 1000)
    rows = [{r.tobytes() for r in part.tensors[0].numpy()} for part in (s.train, s.val, s.test)]
    assert [len(r) for r in rows] == [3500, 500, 1000]  # no duplicated signal inside a part either
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
    # train + val is exactly the paper's training part, test exactly its test part
    assert rows[0] | rows[1] == {r.tobytes() for r in paper_arrays["x"]}
    assert np.array_equal(s.test.tensors[0].numpy(), paper_arrays["x_test"])


def test_training_batches_are_a_function_of_the_seed():
    def first_labels(seed: int) -> list[int]:
        return next(iter(mnist1d_data(seed=seed).train))[1][:8].tolist()

    assert first_labels(0) == first_labels(0) and first_labels(0) != first_labels(1)
    batches = list(mnist1d_data(batch_size=100).train)
    assert len(batches) == 35 and sum(len(b[1]) for b in batches) == 3500


def test_extra_test_signals_follow_the_paper_test_and_are_new(tmp_path, monkeypatch, paper_arrays):
    monkeypatch.setenv("SHRINK_CACHE", str(tmp_path))
    s = mnist1d_split(extra_test=200)
    assert (len(s.train), len(s.val), len(s.test)) == (3500, 500, 1200)
    x_test, y_test = (t.numpy() for t in s.test.tensors)
    assert np.array_equal(x_test[:1000], paper_arrays["x_test"]) and np.array_equal(
        y_test[:1000], paper_arrays["y_test"]
    )
    assert np.bincount(y_test[1000:]).tolist() == [20] * 10  # the generator draws one tenth per digit
    extra = {r.tobytes() for r in x_test[1000:]}
    paper = {r.tobytes() for r in np.concatenate([paper_arrays["x"], paper_arrays["x_test"]])}
    assert len(extra) == 200 and not (extra & paper)
    assert abs(float(x_test[1000:].mean())) < 0.1 and abs(float(x_test[1000:].std()) - 1) < 0.1  # standardised
    again = mnist1d_extra_test(200).tensors[0].numpy()
    assert np.array_equal(again, x_test[1000:])  # a fixed seed gives fixed signals
    assert len(mnist1d_data(extra_test=200).test.dataset) == 1200


@pytest.mark.parametrize("n", [0, -10, 25])
def test_extra_test_size_must_be_a_positive_multiple_of_ten(n):
    with pytest.raises(ValueError, match="multiple of 10"):
        mnist1d_extra_test(n)
