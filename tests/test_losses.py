"""Additive / multiplicative AVH losses (smartaug/losses.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from smartaug.config import LossSpec
from smartaug.core.hardness import avh
from smartaug.core.losses import compute_loss


def case(seed=0, n=32, d=8, c=5):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, d, generator=g, dtype=torch.float64).abs().requires_grad_(True)
    w = torch.randn(c, d, generator=g, dtype=torch.float64).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=g)
    return feats @ w.T, feats, w, y


def test_none_is_plain_cross_entropy():
    logits, f, w, y = case()
    loss, parts = compute_loss(LossSpec(), logits, f, w, y)
    assert float(loss.detach()) == pytest.approx(float(F.cross_entropy(logits, y).detach()))
    assert set(parts) == {"ce"}


@pytest.mark.parametrize("fn,ref", [("square", lambda a: a * a), ("identity", lambda a: a),
                                    ("exp", torch.exp)])
def test_additive_equals_ce_plus_lam_mean_f(fn, ref):
    logits, f, w, y = case(1)
    a = avh(f, w, y)
    ce = F.cross_entropy(logits, y)
    loss, parts = compute_loss(LossSpec("additive", fn, lam=0.7), logits, f, w, y)
    assert loss.item() == pytest.approx((ce + 0.7 * ref(a).mean()).item(), rel=1e-12)
    assert float(parts["avh"]) == pytest.approx(float(a.mean()))


def test_seed_000_form_is_lam_equal_batch_size():
    # mean_i (CE_i + sum_j AVH_j^2) == mean CE + B * mean AVH^2
    logits, f, w, y = case(2)
    a = avh(f, w, y)
    seed_form = (F.cross_entropy(logits, y, reduction="none") + (a * a).sum()).mean()
    loss, _ = compute_loss(LossSpec("additive", lam=len(y)), logits, f, w, y)
    assert loss.item() == pytest.approx(seed_form.item(), rel=1e-12)


@pytest.mark.parametrize("fn,ref", [("exp", torch.exp), ("square", lambda a: a * a),
                                    ("sqrt", torch.sqrt)])
def test_multiplicative_equals_mean_ce_times_g(fn, ref):
    logits, f, w, y = case(3)
    a = avh(f, w, y)
    ce = F.cross_entropy(logits, y, reduction="none")
    loss, _ = compute_loss(LossSpec("multiplicative", fn), logits, f, w, y)
    assert loss.item() == pytest.approx((ce * ref(a)).mean().item(), rel=1e-12)


def test_defaults_and_labels():
    assert LossSpec("additive").fn == "square"
    assert LossSpec("multiplicative").fn == "exp"
    assert LossSpec("additive", lam=2).label() == "ce+2*avh^2"
    assert LossSpec("multiplicative").label() == "ce*exp(avh)"


@pytest.mark.parametrize("spec", [LossSpec("additive"), LossSpec("multiplicative", "sqrt")])
def test_avh_term_trains_features_and_weights_and_survives_zero_feature(spec):
    logits, f, w, y = case(4)
    f = f.detach().clone()
    f[3] = 0  # undefined AVH: its CE still counts, gradients stay finite
    f.requires_grad_(True)
    loss, parts = compute_loss(spec, f @ w.T, f, w, y)
    loss.backward()
    assert math.isfinite(loss.item()) and math.isfinite(float(parts["avh"]))
    assert torch.isfinite(f.grad).all() and torch.isfinite(w.grad).all()
    assert float(w.grad.abs().sum()) > 0


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="valid: additive, multiplicative, none"):
        LossSpec("mult")
    with pytest.raises(ValueError, match="valid: exp, identity, square"):
        LossSpec("additive", "cube")
    with pytest.raises(ValueError, match="lam"):
        LossSpec("additive", lam=-1)
