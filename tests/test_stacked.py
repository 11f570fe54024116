"""Seeds trained as one model (smartaug/core/stacked.py) against the same trainings alone.

The stated tolerance: a stacked training is its lone training up to floating-point
reassociation. After one step each tensor's update differs from the lone one's by at most
three times what the lone training on one thread differs from itself on two (a convolution
behind batch norm: up to ~5 % for ResNet's stem, ~0.1 % for LeNet's first layer), or
``STEP_TOL`` of its norm where that is more; over a training those differences grow as they
do between two machines, so per seed and epoch the mean train loss agrees within
``LOSS_TOL``, accuracies within ``ACC_TOL`` (a fraction of the evaluated images), and the
counts (images, augmentations, steps: the same batches in the same order) exactly.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from smartaug.config import AugmentConfig, DataConfig, LossSpec, PoolSpec, StudyConfig, TrainConfig
from smartaug.core.stacked import StackedLeNet, stackable, train_stacked, vmap_refusal
from smartaug.core.train import build_model, evaluate, train
from smartaug.errors import ConfigError
from smartaug.lake import Lake

STEP_TOL = 1e-3
LOSS_TOL = 2e-3
ACC_TOL = 0.02


@pytest.fixture(scope="module")
def fashion(fashion_root):
    from smartaug.core.datasets import load_dataset

    return load_dataset("fashion-mnist", root=fashion_root, per_class_train=100,
                        per_class_test=40, download=False)


def _alone(model, x, y, cfg, evals):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a study's worker trains
    try:
        return train(model, x, y, cfg, eval_sets=evals, log=None, n_originals=700)
    finally:
        torch.set_num_threads(threads)


def test_stacked_trainings_match_their_lone_trainings_seed_by_seed(fashion):
    """Three trainings (their own seeds, training sets of one size and losses, CE and the
    additive AVH loss) as one model give each one's lone history and weights."""
    tr, te = fashion.train, fashion.test
    rng = np.random.default_rng(0)
    sets = []  # like three selections: the same 700 originals, 300 of their own beside them
    for _ in range(3):
        rows = np.concatenate([np.arange(700), 700 + rng.permutation(300)[:250]])
        sets.append((tr.images[rows], tr.labels[rows]))
    cfgs = [TrainConfig(epochs=2, batch_size=64, seed=s, device="cpu", loss=loss)
            for s, loss in ((0, LossSpec()), (1, LossSpec()), (2, LossSpec("additive")))]
    evals = {"test": (te.images, te.labels)}
    lone = [build_model("lenet5", 10, 1, 28, seed=c.seed) for c in cfgs]
    hist_lone = [_alone(m, x, y, c, evals) for m, (x, y), c in zip(lone, sets, cfgs, strict=True)]
    stacked = [build_model("lenet5", 10, 1, 28, seed=c.seed) for c in cfgs]
    hist_stacked = train_stacked(stacked, sets, cfgs, eval_sets=evals, n_originals=700)
    for a, b, mb in zip(hist_lone, hist_stacked, stacked, strict=True):
        assert len(a) == len(b) == 2
        for ra, rb in zip(a, b, strict=True):
            # the same batches in the same order: the same counts and, to rounding, losses
            assert (ra["samples"], ra["steps"], ra["augmented"]) == (
                rb["samples"], rb["steps"], rb["augmented"])
            assert rb["augmented"] > 0
            assert abs(ra["train_loss"] - rb["train_loss"]) <= LOSS_TOL
            assert abs(ra["test_acc"] - rb["test_acc"]) <= ACC_TOL
        assert evaluate(mb, te.images, te.labels)["acc"] == b[-1]["test_acc"]
    # the trainings are not one another's: different seeds learn different weights
    assert not torch.allclose(stacked[0].head.weight, stacked[1].head.weight)
    assert hist_stacked[0][-1]["test_acc"] > 0.5


def _one_step(fashion, name: str, losses) -> None:
    """One SGD step of each of len(losses) models (seeds 0, 1, ...), stacked, against the
    same step alone on one thread; the bound is what one thread against two already differs
    by (x 3), or ``STEP_TOL`` of the update where that is smaller. SGD: a step is the
    gradient itself (Adam's first step is lr * sign(gradient), which turns a rounding
    difference in a near-zero gradient into a whole step)."""
    tr = fashion.train
    cfgs = [TrainConfig(epochs=1, batch_size=32, seed=s, device="cpu", loss=loss,
                        optimizer="sgd", lr=0.1) for s, loss in enumerate(losses)]
    sets = [(tr.images[i * 32 : (i + 1) * 32], tr.labels[i * 32 : (i + 1) * 32])
            for i in range(len(cfgs))]

    def alone(threads):
        out = []
        for (x, y), c in zip(sets, cfgs, strict=True):
            m = build_model(name, 10, 1, 28, seed=c.seed)
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                train(m, x, y, c, log=None)
            finally:
                torch.set_num_threads(before)
            out.append(m.state_dict())
        return out

    start = [build_model(name, 10, 1, 28, seed=c.seed).state_dict() for c in cfgs]
    one, two = alone(1), alone(2)
    stacked = [build_model(name, 10, 1, 28, seed=c.seed) for c in cfgs]
    train_stacked(stacked, sets, cfgs)
    for w0, wa, wt, mb in zip(start, one, two, stacked, strict=True):
        for key, a in wa.items():
            if not a.is_floating_point() or key.startswith("normalize"):
                continue
            da, dt, db = a - w0[key], wt[key] - w0[key], mb.state_dict()[key] - w0[key]
            assert da.norm() > 0, key  # a step was taken
            bound = max(3 * (da - dt).norm(), STEP_TOL * da.norm())
            assert (da - db).norm() <= bound, key


def test_one_stacked_step_is_each_lone_step_to_rounding(fashion):
    _one_step(fashion, "lenet5", [LossSpec(), LossSpec("additive")])


@pytest.mark.parametrize("name", ["resnet", "lenet5-wide"])
def test_other_models_stack_through_vmap_to_rounding(fashion, name, monkeypatch):
    """Any model (here the built-in ResNet, and a LeNet sent down the generic path): its
    parameters and buffers stacked, its own forward under torch.func.vmap."""
    import smartaug.core.stacked as stacked_

    monkeypatch.setattr(stacked_, "stack_models", stacked_.VmapStack)
    _one_step(fashion, name, [LossSpec(), LossSpec()])


def test_a_diverging_stack_names_its_seeds_and_gives_nothing(fashion):
    from smartaug.core.train import TrainingError

    tr = fashion.train
    cfgs = [TrainConfig(epochs=1, batch_size=64, seed=s, device="cpu", lr=1e30,
                        optimizer="sgd") for s in (3, 4)]
    models = [build_model("lenet5", 10, 1, 28, seed=c.seed) for c in cfgs]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    with pytest.raises(TrainingError, match=r"seed\(s\) \[3, 4\] diverged in epoch 1"):
        train_stacked(models, [(tr.images[:256], tr.labels[:256])] * 2, cfgs)
    for m, b in zip(models, before, strict=True):  # "nothing": the inputs keep their weights
        assert all(torch.equal(v, b[k]) for k, v in m.state_dict().items())


def test_a_stack_writes_its_weights_back_exactly():
    models = [build_model("lenet5", 10, 1, 28, seed=s) for s in range(3)]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    stack = StackedLeNet(models)
    with torch.no_grad():
        for m in models:  # scribble on what trains; unstack restores the stack's copy
            for k, v in m.state_dict().items():
                if v.is_floating_point() and not k.startswith("normalize"):
                    v.fill_(7)
    for m, b in zip(stack.unstack(), before, strict=True):
        for k, v in m.state_dict().items():
            assert torch.equal(v, b[k]), k
    x = torch.rand(5, 3, 28, 28)
    for j, m in enumerate(models):  # the same forward pass as each model alone (eval mode)
        stack.eval()
        m.eval()
        f = stack.features(x)
        assert torch.allclose(f[j], m.features(x[:, j : j + 1]), atol=1e-5)
        assert torch.allclose(stack.logits(f)[j], m(x[:, j : j + 1]), atol=1e-5)


def test_what_cannot_stack_says_why(fashion):
    tr = fashion.train
    assert stackable(build_model("lenet5-wide", 10, 1, 28, seed=0), TrainConfig()) is None
    why = stackable(build_model("resnet", 10, 1, 28, seed=0), TrainConfig(device="cpu"))
    assert "slower than training alone (only LeNet models stack faster there)" in why
    assert "online" in stackable(build_model("lenet5", 10, 1, 28, seed=0),
                                 TrainConfig(augment="online", policy="trivialaugment-wide"))
    models = [build_model("lenet5", 10, 1, 28, seed=s) for s in range(2)]
    with pytest.raises(ValueError, match="equal training sets"):
        train_stacked(models, [(tr.images[:100], tr.labels[:100]),
                               (tr.images[:90], tr.labels[:90])], [TrainConfig(device="cpu")] * 2)
    with pytest.raises(ValueError, match="share epochs"):
        train_stacked(models, [(tr.images[:100], tr.labels[:100])] * 2,
                      [TrainConfig(device="cpu"), TrainConfig(device="cpu", lr=0.1)])
    with pytest.raises(ConfigError, match="stack must be an integer >= 1"):
        StudyConfig(stack=0)
    assert "stack" not in StudyConfig().to_dict()  # the default: every study keeps its id
    assert StudyConfig(stack=4).to_dict()["stack"] == 4


def _study(root: str, **change) -> StudyConfig:
    return replace(StudyConfig(
        data=DataConfig(root=root, per_class_train=30, per_class_test=10, val_fraction=0.2),
        baseline=TrainConfig(epochs=1, device="cpu"), retrain=TrainConfig(epochs=2,
                                                                           device="cpu"),
        pools=(PoolSpec("seed", AugmentConfig()),), budgets=(0.2, 0.5), scores=("avh",),
        positions=("hardest",), coverage=(), references=("none",), seeds=3), **change)


@pytest.mark.slow
def test_a_stacked_study_trains_the_same_cells_to_the_same_figures(tmp_path, fashion_root):
    from smartaug.steps.study import grid_groups, run_study

    alone, together = _study(fashion_root), _study(fashion_root, stack=2)
    lakes = {"alone": Lake(tmp_path / "alone"), "together": Lake(tmp_path / "together")}
    sid_a, _ = run_study(alone, lakes["alone"], workers=1, log=None)
    lines: list[str] = []
    sid_t, _ = run_study(together, lakes["together"], workers=1, log=lines.append)
    assert sid_a == sid_t  # one study: stack is how it trains, not what it computes
    assert json.loads(lakes["together"].row("studies", sid_t)["config"])["stack"] == 2
    assert "stack" not in json.loads(lakes["alone"].row("studies", sid_a)["config"])
    cells: dict = {}
    runs = {}
    for lake in lakes.values():
        for c in json.loads(lake.row("studies", sid_a)["cells"]):
            cells.setdefault((c["budget"], c["selector"], c["rep"]), []).append(c)
        runs.update({r["run_id"]: r for r in lake.sql("select * from runs").to_pylist()})
    assert len(cells) == 2 * 2 * 3 + 3 and len(runs) == 2 * len(cells)
    for a, t in cells.values():
        assert a["selection_id"] == t["selection_id"]  # the same selections, a run each
        assert a["run_id"] != t["run_id"]
        ra, rt = runs[a["run_id"]], runs[t["run_id"]]
        assert (ra["seed"], ra["n_train"], ra["n_augmented"], ra["gradient_steps"]) == (
            rt["seed"], rt["n_train"], rt["n_augmented"], rt["gradient_steps"])
        assert abs(ra["test_acc"] - rt["test_acc"]) <= ACC_TOL
        assert abs(ra["val_acc"] - rt["val_acc"]) <= ACC_TOL
    # groups of at most 2 cells of one size: 6 per budget -> 3 groups, the 3 'none' -> 2
    from smartaug.steps.study import Cell

    typed = [Cell(**t) for _, t in cells.values()]
    assert sorted(len(g) for g in grid_groups(typed, 2)) == [1, 2, 2, 2, 2, 2, 2, 2]
    assert sum("2 trainings as one model" in line for line in lines) == 7
    # found again, nothing retrained: stacked or alone, the finished study is the same one
    for lake in lakes.values():
        n = lake.sql("select count(*) n from runs").to_pylist()[0]["n"]
        assert run_study(together, lake, workers=1, log=None)[0] == sid_t
        assert lake.sql("select count(*) n from runs").to_pylist()[0]["n"] == n
    # a crash in the middle of a group: the lost cell trains alone, its group's others stay
    lost = cells[(0.2, "random", 1)][1]["run_id"]
    kept_at = {r["run_id"]: r["created_at"] for r in lake.sql("select * from runs").to_pylist()}
    lake.remove(lake.partition_dir("runs", lost))
    lake.remove(lake.partition_dir("history", lost))
    lake.remove(lake.partition_dir("studies", sid_t))
    lines.clear()
    run_study(together, lake, workers=1, log=lines.append)
    assert sum("1 training as one model (random rep 1)" in line for line in lines) == 1
    after = {r["run_id"]: r for r in lake.sql("select * from runs").to_pylist()}
    assert set(after) == set(kept_at)
    assert all(after[r]["created_at"] == t for r, t in kept_at.items() if r != lost)


def test_a_model_that_cannot_stack_is_named_before_any_training(small_lake):
    from smartaug.steps.retrain import stack_refusal

    lake, model_id = small_lake["lake"], small_lake["model_id"]
    cfg = _study("unused").protocol()
    assert stack_refusal(lake, cfg, model_id) is None
    why = stack_refusal(lake, replace(cfg, model="resnet"), model_id)
    assert why.startswith("model resnet: ") and "only LeNet models stack" in why
    broken = build_model("resnet", 10, 1, 28, seed=0)
    broken.features = lambda x: x.sum().item() * x  # a Python number: vmap cannot batch it
    assert "torch.func cannot stack ResNet" in vmap_refusal(broken, torch.device("cpu"))
    assert vmap_refusal(build_model("resnet", 10, 1, 28, seed=0), torch.device("cpu")) is None


def test_a_stacked_experiment_gives_the_lone_figures_and_resumes_cell_by_cell(tmp_path,
                                                                             fashion_root):
    """`smartaug experiment` stacks by default: M0's seeds as one model, M1's and M2's (one
    training-set size) as another. Against the same experiment trained alone: the same
    selections, counts and, within the stated tolerance, accuracies; other run ids and
    another experiment id (they say how they were trained); a lost cell is trained again
    alone of its group, the others found."""
    from smartaug.config import preset, standard_methods
    from smartaug.steps.experiment import experiment_id, run_experiment
    from tests.conftest import tiny_config

    assert preset("quick").stack == 8 and preset("paper").stack == 8
    cfg = tiny_config(fashion_root, per_class_train=60, per_class_test=30, epochs=2,
                      methods=standard_methods(), reps=3)
    alone, together = replace(cfg, stack=1), cfg
    lakes = {"alone": Lake(tmp_path / "alone"), "together": Lake(tmp_path / "together")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # lone and stacked trainings compared at one thread, as stated
    try:
        ea = run_experiment(alone, lakes["alone"], log=None)
        lines: list[str] = []
        et = run_experiment(together, lakes["together"], log=lines.append)
    finally:
        torch.set_num_threads(threads)
    assert ea != et and experiment_id(replace(cfg, stack=3)) == et
    assert json.loads(lakes["together"].row("experiments", et)["config"])["stack"] == 8
    assert [x for x in lines if "as one model" in x] == [
        "method: 3 trainings as one model (M0 rep 0, M0 rep 1, M0 rep 2): 1000 images each",
        "method: 6 trainings as one model (M1 rep 0, M2 rep 0, M1 rep 1, M2 rep 1, M1 rep 2, "
        "M2 rep 2): 600 images each"]
    q = "select * from runs order by method, rep"
    ra, rt = (lakes[k].sql(q).to_pylist() for k in ("alone", "together"))
    assert len(ra) == len(rt) == 9
    for a, t in zip(ra, rt, strict=True):
        assert (a["method"], a["rep"], a["seed"], a["selection_id"], a["n_train"],
                a["n_augmented"], a["gradient_steps"]) == (
            t["method"], t["rep"], t["seed"], t["selection_id"], t["n_train"],
            t["n_augmented"], t["gradient_steps"])
        assert a["run_id"] != t["run_id"]
        assert abs(a["test_acc"] - t["test_acc"]) <= ACC_TOL
        assert abs(a["val_acc"] - t["val_acc"]) <= ACC_TOL
    # resume cell by cell: one cell lost, the experiment record gone; the rerun trains that
    # cell (alone of its group) and finds the other eight
    lake = lakes["together"]
    lost = next(r["run_id"] for r in rt if (r["method"], r["rep"]) == ("M2", 1))
    kept = {r["run_id"]: r["created_at"] for r in rt if r["run_id"] != lost}
    for table, key in (("runs", lost), ("history", lost), ("experiments", et)):
        lake.remove(lake.partition_dir(table, key))
    lines.clear()
    assert run_experiment(together, lake, log=lines.append) == et
    assert [x for x in lines if "as one model" in x] == [
        "method: 1 training as one model (M2 rep 1): 600 images each"]
    after = {r["run_id"]: r["created_at"] for r in lake.sql("select * from runs").to_pylist()}
    assert set(after) == set(kept) | {lost}
    assert all(after[r] == t for r, t in kept.items())


def test_an_experiment_whose_model_cannot_stack_trains_alone_in_one_line(small_lake):
    from smartaug.steps.experiment import plan

    lake, model_id = small_lake["lake"], small_lake["model_id"]
    from smartaug.config import standard_methods
    from tests.conftest import tiny_config

    cfg = tiny_config("unused", per_class_train=1, per_class_test=1,
                      methods=standard_methods(), reps=2)
    chosen = {"selections": {"M0": None, "M1": None, "M2": None}, "band": None}
    assert plan(lake, cfg, model_id, chosen, log=None) == [
        [("M0", 0), ("M1", 0), ("M2", 0), ("M0", 1), ("M1", 1), ("M2", 1)]]
    assert plan(lake, replace(cfg, stack=4), model_id, chosen, log=None) == [
        [("M0", 0), ("M2", 0), ("M1", 1)], [("M1", 0), ("M0", 1), ("M2", 1)]]
    lines: list[str] = []
    groups = plan(lake, replace(cfg, model="resnet"), model_id, chosen, log=lines.append)
    assert groups == [[c] for g in groups for c in g] and len(groups) == 6
    assert lines == ["stack 8: every training alone (model resnet: ResNet would stack through "
                     "torch.func's vmap, which on the CPU is slower than training alone (only "
                     "LeNet models stack faster there))"]
    assert plan(lake, replace(cfg, stack=1), model_id, chosen, log=lines.append) == \
        [[c] for c in [("M0", 0), ("M1", 0), ("M2", 0), ("M0", 1), ("M1", 1), ("M2", 1)]]
