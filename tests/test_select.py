"""Selections through DuckDB (smartaug/select.py): exact band sizes on known scores."""

import numpy as np
import pytest

from smartaug.config import SCORE_COLUMNS, SCORE_DIRECTIONS
from smartaug.lake import Lake
from smartaug.steps import select as S
from smartaug.steps.select import SelectionError


def known_run(lake: Lake, run="run0000000000001", n=10_000, classes=10, scores=None,
              columns=None):
    """A scoring run whose avh of item i is i / n (all distinct), class = i % classes;
    ``columns`` (score name -> values) sets every score column instead."""
    if columns is None:
        avh = np.arange(n) / n if scores is None else np.asarray(scores, float)
        columns = {c: np.zeros(len(avh)) for c in SCORE_COLUMNS}
        columns["avh"] = avh
        columns["loss"] = -avh  # reversed order
    n = len(columns["avh"])
    cols = columns
    lake.write("scores", run, {
        "scoring_run_id": [run] * n, "model_id": ["m"] * n, "pool_id": ["p"] * n,
        "item_id": [f"item{i:07d}" for i in range(n)], "label": np.arange(n) % classes,
        "pred": np.zeros(n, np.int64), "correct": np.zeros(n, bool), **cols})
    lake.write("scoring_runs", run, {
        "scoring_run_id": [run], "model_id": ["m"], "pool_id": ["p"], "dataset_id": ["d"],
        "split": [None], "n_items": [n], "n_undefined": [0], "batch_size": [1],
        "device": ["cpu"], "seconds": [0.0], "created_at": [None], "git_sha": ["t"]})
    return run


@pytest.fixture
def lake(tmp_path):
    return Lake(tmp_path)


def ids(lake, sel):
    return [int(x[4:]) for x in S.read_selection(lake, sel)["aug_id"].to_pylist()]


def test_band_size_is_exact(lake):
    run = known_run(lake)
    sel = S.band(lake, run, 0.02, 0.22)
    got = ids(lake, sel)
    assert got == list(range(200, 2200))  # [q(0.02), q(0.22)) of 0..9999 / 10000
    assert ids(lake, S.band(lake, run, 0.0, 1.0)) == list(range(10_000))  # every item
    assert ids(lake, S.band(lake, run, 0.9, 1.0)) == list(range(9000, 10_000))  # max included
    row = S.read_selection(lake, sel).slice(0, 1).to_pylist()[0]
    assert (row["method"], row["score_column"], row["band_lo"], row["band_hi"], row["sql_file"],
            row["scoring_run_id"]) == ("band", "avh", 0.02, 0.22, "band.sql", run)


def test_band_of_another_score_and_per_class(lake):
    run = known_run(lake)
    # loss = -avh: its lowest 10 % are the items with the highest avh
    assert ids(lake, S.band(lake, run, 0.0, 0.1, score="loss")) == list(range(9000, 10_000))
    sel = S.band(lake, run, 0.5, 0.6, per_class=True)
    t = S.read_selection(lake, sel)
    counts = np.bincount(t["label"].to_numpy(), minlength=10)
    assert counts.tolist() == [100] * 10


def test_ties_are_deterministic_all_in_or_all_out(lake):
    run = known_run(lake, scores=[0.1] * 50 + [0.2] * 50 + [0.3] * 100)
    a = ids(lake, S.band(lake, run, 0.25, 0.5))
    assert a == list(range(50, 100))  # q(0.25) = 0.2 (in), q(0.5) = 0.25 -> 0.3 out


def test_same_selection_twice_is_found_not_rewritten(lake):
    run = known_run(lake)
    a = S.band(lake, run, 0.02, 0.22)
    b = S.band(lake, run, 0.02, 0.22)
    assert a == b
    assert lake.sql("select count(*) n from selections").to_pylist() == [{"n": 2000}]


def test_random_matched_has_same_size_and_class_mix(lake):
    run = known_run(lake, n=5000)
    band = S.band(lake, run, 0.1, 0.3, per_class=False)
    t_band = S.read_selection(lake, band)
    r1 = S.random_subset(lake, run, matched_to=band, seed=1)
    r2 = S.random_subset(lake, run, matched_to=band, seed=2)
    t1 = S.read_selection(lake, r1)
    assert t1.num_rows == t_band.num_rows
    assert np.array_equal(np.bincount(t1["label"].to_numpy(), minlength=10),
                          np.bincount(t_band["label"].to_numpy(), minlength=10))
    assert ids(lake, r1) != ids(lake, r2)
    lake2 = Lake(lake.root / "copy")
    known_run(lake2, n=5000)
    band2 = S.band(lake2, run, 0.1, 0.3)
    assert ids(lake2, S.random_subset(lake2, run, matched_to=band2, seed=1)) == ids(lake, r1)
    spread = np.array(ids(lake, r1))
    assert spread.min() < 500 and spread.max() > 4500  # drawn from the whole run


def test_random_fraction_and_all(lake):
    run = known_run(lake, n=1000)
    assert len(ids(lake, S.random_subset(lake, run, fraction=0.2))) == 200
    assert len(ids(lake, S.random_subset(lake, run, size=37, seed=4))) == 37
    assert ids(lake, S.all_items(lake, run)) == list(range(1000))


@pytest.mark.parametrize("lo,hi,msg", [(-0.1, 0.2, "outside"), (0.2, 1.5, "outside"),
                                       (0.3, 0.3, "lo must be below hi"),
                                       (0.5, 0.2, "lo must be below hi")])
def test_bad_bands(lake, lo, hi, msg):
    run = known_run(lake, n=100)
    with pytest.raises(SelectionError, match=msg):
        S.band(lake, run, lo, hi)


def test_empty_band_unknown_score_missing_run(lake):
    run = known_run(lake, scores=[0.5] * 100)
    with pytest.raises(SelectionError, match="selects nothing"):
        S.band(lake, run, 0.1, 0.2)  # every score equals q_lo = q_hi: nothing in [q, q)
    assert lake.sql("select count(*) n from selections").to_pylist() == [{"n": 0}]
    with pytest.raises(SelectionError, match="unknown score column 'avhh'; valid: avh"):
        S.band(lake, run, 0.1, 0.2, score="avhh")
    with pytest.raises(SelectionError, match="no scoring run"):
        S.band(lake, "nope", 0.1, 0.2)
    with pytest.raises(SelectionError, match="no selection"):
        S.random_subset(lake, run, matched_to="nope")


def test_nan_scores_are_left_out(lake):
    run = known_run(lake, scores=[np.nan] * 10 + list(np.arange(100) / 100))
    got = ids(lake, S.band(lake, run, 0.0, 1.0))
    assert got == list(range(10, 110))


def test_every_query_that_reads_a_score_reads_the_one_it_is_given(lake):
    """Every SQL file taking ``$score`` (band, window, coverage, class counts) selects by that
    column and no other, for every score name the config knows: each column holds its own
    ranking of the items, so a query reading the wrong one picks other items."""
    from importlib import resources

    from smartaug.steps.sql import sql_text

    users = sorted(f.name for f in resources.files("smartaug.steps.sql").iterdir()
                   if f.name.endswith(".sql") and "$score" in sql_text(f.name))
    assert users == ["band.sql", "class_counts.sql", "coverage.sql", "window.sql"]
    n = 200
    rng = np.random.default_rng(0)
    cols = {c: rng.permutation(n).astype(float) for c in SCORE_COLUMNS}  # a ranking each
    cols["margin"][:7] = np.nan  # undefined for 7 items: class counts must see it
    run = known_run(lake, "run0000000000009", classes=4, columns=cols)
    for c in SCORE_COLUMNS:
        order = np.argsort(cols[c], kind="stable")  # NaN last
        defined = order[~np.isnan(cols[c][order])]
        q = np.quantile(cols[c][defined], 0.1)  # linear, as quantile_cont
        assert ids(lake, S.band(lake, run, 0.0, 0.1, score=c)) == sorted(
            i for i in defined.tolist() if cols[c][i] < q)
        hard = defined if SCORE_DIRECTIONS[c] > 0 else defined[::-1]
        assert ids(lake, S.window(lake, run, 20, score=c, lo=0.0)) == sorted(hard[:20].tolist())
        kept = set(ids(lake, S.coverage(lake, run, 20, score=c, drop=0.5, bins=1)))
        assert kept <= set(hard[:len(hard) - len(hard) // 2].tolist()) and len(kept) == 20
        assert sum(S.class_counts(lake, run, c).values()) == len(defined)
    assert sum(S.class_counts(lake, run).values()) == n


def test_a_comment_or_layout_edit_keeps_a_selection_id(lake, monkeypatch):
    """Selection ids hash the query's normalised text: an edited comment or re-indented SQL
    finds the same selection; a change in what the query does makes a new one."""
    from smartaug.steps import sql

    run = known_run(lake, n=100)
    first = S.band(lake, run, 0.1, 0.3)
    text = sql.sql_text("band.sql")
    for edited in ("-- a new comment\n" + text.replace("\n    ", "\n\t  "),
                   text.replace("-- Ties at a boundary", "--   ties at a boundary")):
        monkeypatch.setattr(sql, "sql_text", lambda name, t=edited: t if name == "band.sql"
                            else sql.resources.files(sql.__name__).joinpath(name).read_text())
        assert S.band(lake, run, 0.1, 0.3) == first
    changed = text.replace("order by item_id", "order by item_id desc")
    monkeypatch.setattr(sql, "sql_text", lambda name: changed if name == "band.sql"
                        else sql.resources.files(sql.__name__).joinpath(name).read_text())
    assert S.band(lake, run, 0.1, 0.3) != first
