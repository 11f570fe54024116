"""Configs (smartaug/config.py): a leaf without torch, JSON round trips, strict loading."""

import json
import subprocess
import sys
from dataclasses import replace

import pydantic
import pytest

from smartaug.config import (
    LOSS_FNS,
    SCORE_COLUMNS,
    ExperimentConfig,
    LossSpec,
    config_from_dict,
    preset,
    standard_methods,
)


def test_importing_the_config_does_not_import_torch():
    code = "import sys, smartaug.config; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("cfg", [
    preset("quick"), preset("paper"),
    replace(preset("quick"), band_grid=((0.0, 0.2), (0.4, 0.6)),
            methods=standard_methods(ablations=True, other_scores=("margin", "el2n"))),
    ExperimentConfig(), replace(preset("paper"), retrain=replace(
        preset("paper").retrain, optimizer="sgd", loss=LossSpec("multiplicative", "sqrt")))])
def test_config_round_trips_through_json(cfg):
    back = config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.to_dict() == cfg.to_dict()
    assert isinstance(back.methods, tuple) and isinstance(back.methods[0].band or (0, 0), tuple)


def test_unknown_keys_and_bad_values_are_errors_not_dropped():
    d = preset("quick").to_dict()
    with pytest.raises(pydantic.ValidationError, match="epochz"):
        config_from_dict({**d, "epochz": 3})
    with pytest.raises(pydantic.ValidationError, match="learning_rate"):
        config_from_dict({**d, "retrain": {**d["retrain"], "learning_rate": 1}})
    with pytest.raises(pydantic.ValidationError, match="reps must be >= 1"):
        config_from_dict({**d, "reps": 0})
    with pytest.raises(pydantic.ValidationError, match="unknown loss kind"):
        config_from_dict({**d, "retrain": {**d["retrain"], "loss": {"kind": "focal"}}})


def test_the_names_the_config_accepts_are_the_ones_the_core_implements():
    from smartaug.core.hardness import hardness_scores
    from smartaug.core.losses import ADDITIVE_FNS, MULTIPLICATIVE_FNS
    from smartaug.lake import SCHEMAS
    from smartaug.steps.sql import sql_text

    assert set(ADDITIVE_FNS) == set(LOSS_FNS["additive"])
    assert set(MULTIPLICATIVE_FNS) == set(LOSS_FNS["multiplicative"])
    import torch

    s = hardness_scores(torch.randn(4, 3), torch.randn(4, 5), torch.randn(3, 5),
                        torch.tensor([0, 1, 2, 0]))
    assert set(s) - {"pred", "correct"} == set(SCORE_COLUMNS)
    assert [c for c in SCHEMAS["scores"].names if c in SCORE_COLUMNS] == list(SCORE_COLUMNS)
    # no SQL file lists the score columns: they pick one by name ($score), and the only list
    # is SCORE_COLUMNS (tests/test_select.py runs every such file with every score)
    from importlib import resources

    for f in resources.files("smartaug.steps.sql").iterdir():
        if f.name.endswith(".sql"):
            text = sql_text(f.name)
            listed = [c for c in SCORE_COLUMNS if f"'{c}'" in text and c != "avh"]
            assert not listed, (f.name, listed)


def test_fields_added_later_keep_every_id_made_before_them():
    from smartaug.config import DataConfig, StudyConfig, study_from_dict

    cfg = preset("quick")
    assert "val_split" not in cfg.to_dict()["data"]  # the experiment's id is as it was
    assert DataConfig(val_split=2).to_dict()["val_split"] == 2
    one = replace(StudyConfig(), positions=("offset",))
    assert "baselines" not in one.to_dict() and "choose_seeds" not in one.to_dict()
    many = replace(StudyConfig(), baselines=3, choose_seeds=2)
    assert many.to_dict()["baselines"] == 3 and many.to_dict()["choose_seeds"] == 2
    for c in (one, many):
        assert study_from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert StudyConfig().per_class  # windows and coverage stratified like random, by default


# ------------------------------------------------------------------ the study's grid


def test_a_selector_spells_its_name_and_reads_it_back():
    from smartaug.config import Selector
    from smartaug.errors import ConfigError

    known = {"random": Selector("random"), "random-unstratified": Selector("random-unstratified"),
             "avh@offset": Selector("window", "avh", "offset"),
             "el2n@val": Selector("chosen", "el2n"), "coverage-margin": Selector("coverage", "margin"),
             "none": Selector("none"), "all": Selector("all"), "ta": Selector("arm", arm="ta")}
    for name, sel in known.items():
        assert sel.name == name and Selector.parse(name, ["ta"]) == sel
    assert [Selector.parse(n, ["ta"]).family for n in known] == [
        "random", "random", "window", "window", "coverage", "reference", "reference", "arm"]
    for bad in ("avh@middle", "coverage-x", "ta", "nosuch@val"):
        with pytest.raises(ConfigError, match="unknown selector"):
            Selector.parse(bad)


def test_the_grid_is_every_reported_row_in_one_order():
    """One pool, two budgets, two losses, unstratified windows: random (and its unstratified
    control), each score's windows then its @val, coverage and the arm at each budget, each
    with every loss; then none, all and the pruning arm on the whole pool."""
    from smartaug.config import Arm, PoolSpec, StudyConfig

    cfg = StudyConfig(pools=(PoolSpec("p"),), budgets=(0.1, 0.5), scores=("avh",),
                      positions=("easiest", "hardest"), coverage=("el2n",), per_class=False,
                      losses=("ce", "avh"), arms=(Arm("u", policy="uniform", budgets=(0.5,)),))
    rows = [(g.pool, g.budget, g.selector.name, g.loss) for g in cfg.grid()]
    per_budget = ["random", "random-unstratified", "avh@easiest", "avh@hardest", "avh@val",
                  "coverage-el2n"]
    want = [("p", b, s, loss) for b in (0.1, 0.5) for s in per_budget + (["u"] if b == 0.5
                                                                        else [])
            for loss in ("ce", "avh")]
    want += [("p", b, s, loss) for b, s in ((0.0, "none"), (1.0, "all"))
             for loss in ("ce", "avh")]
    assert rows == want
    assert cfg.selectors() == ["avh@easiest", "avh@hardest", "avh@val", "coverage-el2n", "u"]
    pruned = replace(cfg, losses=("ce",), arms=(Arm("ib", source="infobatch"),))
    assert [(g.budget, g.selector.name) for g in pruned.grid()][-3:] == [
        (0.0, "none"), (1.0, "all"), (1.0, "ib")]  # pruning on the whole pool, beside all


def test_stored_study_configs_load_through_one_versioned_upgrade():
    from smartaug.config import STUDY_FORMAT, load_study, study_format, study_preset

    today = study_preset("quick").to_dict()
    assert study_format(today) == STUDY_FORMAT and load_study(today) == study_preset("quick")
    before_choosing = {k: v for k, v in today.items() if k != "choose_seeds"}
    assert study_format(before_choosing) == 2  # SCORE@val chosen on the reported seeds
    assert load_study(before_choosing).choose_seeds == 0
    before_stratifying = {k: v for k, v in before_choosing.items() if k != "per_class"}
    assert study_format(before_stratifying) == 1  # windows over the whole pool
    old = load_study(before_stratifying)
    assert (old.per_class, old.choose_seeds) == (False, 0)
    assert [g.selector.name for g in old.grid()][:2] == ["random", "random-unstratified"]
