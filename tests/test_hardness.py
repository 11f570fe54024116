"""Known answers and properties of the AVH family (smartaug/core/hardness.py)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from smartaug.core.hardness import angles, avc, avh, hardness_scores


def avh_reference(x: np.ndarray, w: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Independent float64 implementation, one sample at a time."""
    out = np.empty(len(x))
    for i in range(len(x)):
        a = [math.acos(max(-1.0, min(1.0, float(x[i] @ w[c]) /
                                     (np.linalg.norm(x[i]) * np.linalg.norm(w[c])))))
             for c in range(len(w))]
        out[i] = a[y[i]] / sum(a)
    return out


def random_case(n=64, d=16, c=10, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    w = torch.randn(c, d, generator=g, dtype=dtype)
    y = torch.randint(0, c, (n,), generator=g)
    return x, w, y


def test_matches_reference_on_random_inputs():
    for seed in range(5):
        x, w, y = random_case(seed=seed)
        got = avh(x, w, y).numpy()
        np.testing.assert_allclose(got, avh_reference(x.numpy(), w.numpy(), y.numpy()),
                                   atol=1e-9, rtol=0)


def test_matches_reference_on_adversarial_inputs():
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 1e-9, 0.0]],
                     dtype=torch.float64)
    x = torch.tensor([
        [1.0, 0.0, 0.0],        # parallel to w0 and (almost) w3, antiparallel to w2
        [-3.0, 0.0, 0.0],       # antiparallel to w0
        [1e-30, 1e-30, 0.0],    # tiny norm
        [1e30, -1e30, 1e30],    # huge norm
        [0.0, 0.0, 1.0],        # orthogonal to everything
    ], dtype=torch.float64)
    for label in range(4):
        y = torch.full((len(x),), label)
        np.testing.assert_allclose(avh(x, w, y).numpy(),
                                   avh_reference(x.numpy(), w.numpy(), y.numpy()),
                                   atol=1e-6, rtol=0)


def test_parallel_feature_has_smallest_avh_of_all_classes():
    _, w, _ = random_case(n=1, c=7, seed=1)
    for c in range(7):
        x = 2.5 * w[c : c + 1]
        scores = [float(avh(x, w, torch.tensor([k]))) for k in range(7)]
        assert int(np.argmin(scores)) == c
        assert scores[c] < 1e-6


def test_two_class_case_by_hand():
    # x at 30 degrees from w0 and 60 degrees from w1 (w0 _|_ w1): AVH = 30/90, 60/90.
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([[math.cos(math.pi / 6), math.sin(math.pi / 6)]], dtype=torch.float64)
    assert float(avh(x, w, torch.tensor([0]))) == pytest.approx(1 / 3, abs=1e-12)
    assert float(avh(x, w, torch.tensor([1]))) == pytest.approx(2 / 3, abs=1e-12)
    np.testing.assert_allclose(angles(x, w).numpy(), [[math.pi / 6, math.pi / 3]], atol=1e-12)
    # AVC: (pi - A) / sum(pi - A) = (5/6) / (5/6 + 4/6)
    np.testing.assert_allclose(avc(x, w).numpy(), [[5 / 9, 4 / 9]], atol=1e-12)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-3, 1e3))
def test_invariant_to_positive_feature_scale(seed, scale):
    x, w, y = random_case(n=8, seed=seed)
    np.testing.assert_allclose(avh(scale * x, w, y).numpy(), avh(x, w, y).numpy(), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_equivariant_to_class_permutation(seed):
    x, w, y = random_case(n=16, seed=seed)
    perm = torch.randperm(w.shape[0], generator=torch.Generator().manual_seed(seed))
    inv = torch.argsort(perm)
    # class c of the permuted problem is class perm[c] of the original
    np.testing.assert_allclose(avh(x, w[perm], inv[y]).numpy(), avh(x, w, y).numpy(), atol=1e-12)
    np.testing.assert_allclose(avc(x, w[perm]).numpy(), avc(x, w)[:, perm].numpy(), atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), c=st.integers(2, 20))
def test_avh_strictly_between_zero_and_one_and_avc_sums_to_one(seed, c):
    x, w, y = random_case(n=32, c=c, seed=seed)
    a = avh(x, w, y)
    assert bool(((a > 0) & (a < 1)).all())
    np.testing.assert_allclose(avc(x, w).sum(1).numpy(), 1.0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 7, 300])
def test_shape_is_n_for_every_batch_size(n):
    x, w, y = random_case(n=n)
    for out in (avh(x, w, y), *hardness_scores(x @ w.T, x, w, y).values()):
        assert out.shape == (n,)
    assert angles(x, w).shape == (n, 10)
    assert avc(x, w).shape == (n, 10)


def test_dtype_follows_input_and_float32_agrees_with_float64():
    x, w, y = random_case(n=128, seed=3)
    a64 = avh(x, w, y)
    a32 = avh(x.float(), w.float(), y)
    assert a64.dtype == torch.float64 and a32.dtype == torch.float32
    np.testing.assert_allclose(a32.double().numpy(), a64.numpy(), atol=1e-6)
    s = hardness_scores((x @ w.T).float(), x.float(), w.float(), y)
    assert all(v.dtype == torch.float32 for k, v in s.items() if k not in ("pred", "correct"))


def test_batch_size_independence():
    x, w, y = random_case(n=100, seed=4, dtype=torch.float32)
    whole = avh(x, w, y)
    parts = torch.cat([avh(x[i : i + 7], w, y[i : i + 7]) for i in range(0, 100, 7)])
    # float64 inside, rounded to float32: another batch size may block the product otherwise
    # (tests/README.md), which moves float64's last bits, far below float32's (rtol 1e-6)
    np.testing.assert_allclose(parts.numpy(), whole.numpy(), rtol=1e-6, atol=0)
    assert not torch.isnan(whole).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_finite_at_cos_plus_minus_one(dtype):
    w = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=dtype, requires_grad=True)
    x = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [0.0, 3.0]], dtype=dtype, requires_grad=True)
    a = avh(x, w, torch.tensor([0, 0, 2]))
    (a * a).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(w.grad).all()


def test_zero_feature_is_nan_not_zero_and_others_keep_finite_gradients():
    x, w, y = random_case(n=4, seed=5)
    x = x.clone()
    x[2] = 0
    x.requires_grad_(True)
    a = avh(x, w, y)
    assert torch.isnan(a[2]) and torch.isfinite(a[[0, 1, 3]]).all()
    a[[0, 1, 3]].sum().backward()
    assert torch.isfinite(x.grad).all()
    s = hardness_scores(x.detach() @ w.T, x.detach(), w, y)
    assert torch.isnan(s["avh"][2]) and torch.isnan(s["avc_true"][2])


def test_zero_weight_row_gives_nan():
    x, w, y = random_case(n=4, seed=6)
    w = w.clone()
    w[1] = 0
    assert torch.isnan(avh(x, w, y)).all()


def test_other_scores_known_answers():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    s = hardness_scores(logits, feats, w, y)
    p0 = math.exp(2) / (math.exp(2) + 2)
    assert float(s["confidence"][0]) == pytest.approx(p0)
    assert float(s["loss"][0]) == pytest.approx(-math.log(p0))
    assert float(s["margin"][0]) == pytest.approx(2.0)
    assert float(s["margin"][1]) == pytest.approx(0.0)
    assert float(s["entropy"][1]) == pytest.approx(math.log(3))
    q = (1 - p0) / 2
    assert float(s["el2n"][0]) == pytest.approx(math.sqrt((1 - p0) ** 2 + 2 * q * q))
    assert float(s["feature_norm"][0]) == pytest.approx(1.0)
    assert s["pred"].tolist() == [0, 0] and s["correct"].tolist() == [True, False]


def test_bad_inputs_raise_clear_errors():
    x, w, y = random_case(n=4)
    with pytest.raises(ValueError, match="out of range"):
        avh(x, w, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="out of range"):
        avh(x, w, torch.tensor([0, -1, 2, 3]))
    with pytest.raises(ValueError, match="feature dim"):
        avh(x[:, :5], w, y)
    with pytest.raises(ValueError, match=r"\[N\]"):
        avh(x, w, y[:3])
