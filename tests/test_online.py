"""On-the-fly training: fresh augmentations every epoch, from a space, a policy file or
torchvision's anchors, deterministic in (seed, epoch, sample)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import AugmentConfig, TrainConfig
from pipeline.core import augment as aug
from pipeline.core.online import Online, _seed
from pipeline.core.train import build_model, train
from pipeline.errors import ConfigError

RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, (40, 28, 28, 1), dtype=np.uint8)
Y = np.arange(40) % 4


@pytest.mark.parametrize("policy", ["space:rotate,noise,hflip", "trivialaugment-wide",
                                    "randaugment", "autoaugment-cifar10"])
def test_each_epoch_is_fresh_and_the_same_again(policy):
    a, b = Online(policy, X, Y, seed=3), Online(policy, X, Y, seed=3)
    e1, e2 = a.epoch(1), a.epoch(2)
    assert e1.shape == X.shape and e1.dtype == np.uint8
    assert np.array_equal(e1, b.epoch(1))  # the same seed and epoch: the same images
    assert not np.array_equal(e1, e2)  # a fresh draw every epoch
    assert not np.array_equal(e1, Online(policy, X, Y, seed=4).epoch(1))
    assert Online("none", X, Y, seed=3).epoch(1) is None


def test_a_space_draw_is_the_pools_pure_function_of_seed_epoch_and_sample():
    got = Online("space:rotate,noise,hflip", X, Y, seed=7).epoch(2)
    cfg = AugmentConfig()
    for i in (0, 13, 39):
        s = _seed(7, 2, f"train/{i}")
        item = (0, 2, s, cfg.kinds[(s >> 17) % 3])
        assert np.array_equal(got[i], aug._apply(X[i:i + 1], [item], cfg, record=False)[0])


def test_online_training_sees_originals_plus_one_draw_each_and_repeats_itself():
    cfg = TrainConfig(epochs=2, batch_size=16, device="cpu", augment="online",
                      policy="space:rotate,noise,hflip")
    h1 = train(build_model("lenet5", 4, 1, 28, seed=0), X, Y, cfg, log=None)
    h2 = train(build_model("lenet5", 4, 1, 28, seed=0), X, Y, cfg, log=None)
    assert [r["train_loss"] for r in h1] == [r["train_loss"] for r in h2]
    none = TrainConfig(epochs=2, batch_size=16, device="cpu", augment="online", policy="none")
    static = TrainConfig(epochs=2, batch_size=16, device="cpu")
    h3 = train(build_model("lenet5", 4, 1, 28, seed=0), X, Y, none, log=None)
    h4 = train(build_model("lenet5", 4, 1, 28, seed=0), X, Y, static, log=None)
    assert [r["train_loss"] for r in h3] == [r["train_loss"] for r in h4]  # none: originals
    # online over originals + draws: twice the images of the originals alone each epoch
    pool = Online("space:rotate,noise,hflip", X, Y, seed=0)
    both = np.concatenate([X, pool.epoch(1)])
    assert both.shape[0] == 2 * len(X)


@pytest.mark.parametrize("kwargs, words", [
    ({"augment": "online"}, "needs a policy"),
    ({"augment": "online", "policy": "autoaugment-imagenet"}, "unknown online policy"),
    ({"policy": "randaugment"}, "is for augment = 'online'"),
    ({"augment": "sometimes"}, "augment"),
])
def test_bad_online_configs_are_refused(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig(**kwargs)


def test_static_configs_keep_their_ids():
    assert "augment" not in TrainConfig().to_dict() and "policy" not in TrainConfig().to_dict()
    d = TrainConfig(augment="online", policy="randaugment").to_dict()
    assert d["augment"] == "online" and d["policy"] == "randaugment"


def test_an_anchor_refuses_images_it_cannot_take():
    with pytest.raises(ConfigError, match="1 or 3 channels"):
        Online("trivialaugment-wide", np.zeros((2, 28, 28, 2), np.uint8), np.zeros(2), 0)
