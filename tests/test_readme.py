"""The README's and docs/'s commands work as written: every line of their ``bash`` blocks runs
(on a generated image folder in place of /data/pets, in a scratch directory), except the few
listed in SKIPPED with where they are tested; their SQL runs in `smartaug sql` and the DuckDB
CLI; their Python blocks and experiment and study files run or load."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_image_folder

ROOT = Path(__file__).resolve().parent.parent
# the README first (its tour makes the lake the other pages' blocks use), then docs/ in order
PAGES = [ROOT / "README.md", *(ROOT / "docs" / f"{name}.md" for name in (
    "cli", "studies", "results", "recommend", "library", "prefect", "lake", "performance",
    "glossary"))]
README = (ROOT / "README.md").read_text()
TEXT = "\n".join(p.read_text() for p in PAGES)
BIN = Path(sys.executable).parent

# line -> why it does not run here (each is exercised elsewhere)
SKIPPED = {
    "make run    # set up everything, then run the main job":
        "the main job itself; tests/test_flows.py runs the same deployment through a served "
        "deployment on a smaller config",
    "make test   # set up everything, then run the test suite": "this suite",
    ".venv/bin/smartaug experiment --preset quick --epochs 10 --seeds 5":
        "the full quick preset for 10 epochs (half an hour on 2 cores); the same command on "
        "an image folder runs below",
    "export PREFECT_API_URL=http://127.0.0.1:4200/api      # what make sets":
        "a server on port 4200: tests/test_flows.py starts its own",
    ".venv/bin/prefect deployment ls": "tests/test_flows.py (against its own server)",
    ".venv/bin/prefect deployment run smart-augmentation/smart-augmentation "
    "-p preset=quick -p overrides='{\"epochs\": 2, \"reps\": 5}' --watch":
        "tests/test_flows.py runs the deployment with overrides",
    ".venv/bin/prefect deployment run smart-augmentation/smart-augmentation "
    "-p overrides='{\"dataset\": \"imagefolder:/data/pets\", \"grayscale\": true, "
    "\"image_size\": 28}' --watch": "tests/test_flows.py runs the deployment with overrides",
    ".venv/bin/smartaug study --preset quick --dataset imagefolder:/data/pets --grayscale "
    "--image-size 28 --epochs 1 --seeds 2":
        "tests/test_study.py::test_cli_study_preset_with_overrides_prints_the_report_last runs "
        "this very command on a generated image folder (and again: nothing to do)",
    ".venv/bin/smartaug study --preset quick":
        "the full study at the quick preset's size (about 1.5 h on 2 cores; its results are in "
        "the README); tests/test_study.py runs the preset with overrides",
    ".venv/bin/smartaug study --config study.toml --workers 2":
        "the README's study file at full size; test_readme_study_file_is_accepted loads it and "
        "tests/test_study.py runs a study file",
    ".venv/bin/prefect deployment run study/study -p preset=quick -p overrides='{\"reps\": 5}' "
    "--watch": "tests/test_flows.py runs the study flow on a Dask cluster",
    "make cifar10-mini CIFAR10_MINI_TAR=path/to/cifar10-mini.tar.gz # -> "
    "data/cifar10-mini/{train,test}":
        "unpacks the CIFAR-10 subset the committed results ran on (an archive this suite does "
        "not have); test_experiment_file.py loads files naming their data this way",
    ".venv/bin/prefect deployment run reselect/nightly -p retrain=false --watch":
        "tests/test_flows.py runs the reselect flow",
}

SKIPPED = {" ".join(k.split()): v for k, v in SKIPPED.items()}


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", TEXT, flags=re.S)


def commands(block: str) -> list[str]:
    """The block's command lines, continuation lines joined."""
    return [" ".join(c.split()) for c in re.sub(r"\\\n\s*", " ", block).splitlines()
            if c.strip()]


def test_every_skipped_line_is_still_in_the_readme():
    lines = {c for b in blocks("bash") for c in commands(b)}
    assert set(SKIPPED) <= lines, set(SKIPPED) - lines


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A directory like the repository root: .venv/bin (this environment's), storage/ with its
    views.sql, and an image folder for /data/pets."""
    d = tmp_path_factory.mktemp("readme")
    (d / ".venv").mkdir()
    (d / ".venv" / "bin").symlink_to(BIN)
    (d / "storage").mkdir()
    shutil.copy(ROOT / "storage" / "views.sql", d / "storage" / "views.sql")
    pets = write_image_folder(d / "pets", classes=("cat", "dog", "eel"), per_class=(24, 6),
                              size=(36, 36), ext=".jpg")
    return d, pets


def run_block(scratch, block: str, stdin: str = "", *, before: str = "", after: str = ""
              ) -> subprocess.CompletedProcess:
    """Run ``block``'s command lines in one bash; ``before`` and ``after``: the harness's own
    lines around them."""
    d, pets = scratch
    lines = [c if c not in SKIPPED else f"# skipped: {c}" for c in commands(block)]
    script = "set -euo pipefail\n" + before + "\n".join(lines) + "\n" + after
    script = script.replace("/data/pets", str(pets)).replace("/data/other-lake",
                                                             str(d / "other-lake"))
    res = subprocess.run(["bash", "-c", script], cwd=d, input=stdin, capture_output=True,
                         text=True, timeout=1800)
    assert res.returncode == 0, (script, res.stdout[-3000:], res.stderr[-3000:])
    return res


@pytest.mark.slow
def test_readme_shell_commands_run(scratch):
    d, _ = scratch
    bash = blocks("bash")
    cli = next(b for b in bash if "S=.venv/bin/smartaug" in b)
    names = sorted({c.split("=", 1)[0] for c in commands(cli) if re.match(r"[A-Z]+=", c)})
    out = run_block(scratch, cli, after=f"echo '#vars'; declare -p {' '.join(names)}\n")
    tour, variables = out.stdout.split("#vars\n")
    assert all(k in tour for k in ("rotate", "noise", "hflip")), tour  # its sql
    kinds = subprocess.run([str(BIN / "smartaug"), "sql", "select kind, count(*) n from "
                            "augmentations group by kind order by kind", "--csv"], cwd=d,
                           capture_output=True, text=True, check=True).stdout.split()[1:]
    train = subprocess.run([str(BIN / "smartaug"), "sql", "select count(*) from samples "
                            "where split = 'train'", "--csv"], cwd=d, capture_output=True,
                           text=True, check=True).stdout.split()[-1]
    assert [k.split(",")[0].strip('"') for k in kinds] == ["hflip", "noise", "rotate"]
    assert sum(int(k.split(",")[1]) for k in kinds) == int(train)  # --policy one: one each
    lake_rows = subprocess.run([str(BIN / "smartaug"), "sql", "select count(*) n from selections",
                                "--csv"], cwd=d, capture_output=True, text=True, check=True)
    assert int(lake_rows.stdout.split()[-1]) > 0
    # every other block, in order, in one bash (the experiment on the image folder included),
    # with the tour's variables ($S, $D, $M, ...): a line already run (docs/cli.md repeats the
    # tour) is not run again while the variables it reads hold what they held then; space.yaml
    # is the README's space file
    (d / "space.yaml").write_text(blocks("yaml")[0])
    rest = [b for b in bash if b is not cli and "duckdb" not in b]
    state: dict[str, str] = {}  # variable -> the line that last assigned it
    seen, once, n_tour = set(), [], len(commands(cli))

    def key(c: str) -> tuple:  # the line, and what the variables it reads and sets hold
        names = [read or assigned for read, assigned in re.findall(r"\$(\w+)|^([A-Z]+)=", c)]
        return c, tuple(state.get(v) for v in names)

    for i, c in enumerate([*commands(cli), *commands("\n".join(rest))]):
        if i >= n_tour:
            once.append(f"# again: {c}" if key(c) in seen else c)
        if m := re.match(r"([A-Z]+)=", c):
            state[m.group(1)] = c
        seen.add(key(c))
    run_block(scratch, "\n".join(once), before=variables)
    query = "select count(*) as n_pools from pools;\n"
    for block in (b for b in bash if "duckdb" in b):
        for line in commands(block):  # each opens the DuckDB CLI, which reads stdin
            res = run_block(scratch, line, stdin=query)
            if "duckdb" in line:  # (the block's other lines make what they open)
                assert "n_pools" in res.stdout, (line, res.stdout, res.stderr)
    # the other lake was made by the DuckDB block's ingest; the views file it wrote works
    assert (d / "other.sql").is_file() and (d / "other-lake" / ".lake-id").is_file()


@pytest.mark.slow
def test_readme_sql_runs_in_smartaug_sql_and_the_duckdb_cli(scratch):
    d, _ = scratch
    if not (d / "storage" / "scores").exists():
        run_block(scratch, next(b for b in blocks("bash") if "S=.venv/bin/smartaug" in b))
    sql_blocks = blocks("sql")
    queries = [q.strip() for b in sql_blocks for q in b.split(";") if q.strip()]
    # the README's one, docs/studies.md's re-scorings (rows only where a curriculum trained:
    # tests/test_curriculum.py runs it on one), docs/lake.md's four and its baselines' one
    assert len(sql_blocks) == 4 and len(queries) == 7
    for q in queries:
        res = subprocess.run([str(BIN / "smartaug"), "sql", "--csv", "--", q], cwd=d,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, (q, res.stderr)
        assert len(res.stdout.splitlines()) >= 2 or "train_run_id is not null" in q, q
    # the README's: the test split's originals on their own row, never mixed with the
    # augmentations of train images
    res = subprocess.run([str(BIN / "smartaug"), "sql", "--csv", "--", queries[0]], cwd=d,
                         capture_output=True, text=True, timeout=300)
    kinds = {line.split(",")[0].strip('"') for line in res.stdout.splitlines()[1:]}
    from smartaug.config import BUILTIN_KINDS

    assert "originals (test)" in kinds and "original" not in kinds, kinds
    assert all(k in BUILTIN_KINDS or k in ("originals (train)", "originals (val)",
                                           "originals (test)") for k in kinds), kinds
    plain = [b for b in sql_blocks if "train_run_id" not in b]
    for text, columns in zip(plain, (("mean_avh", "acc"), ("mean_avh", "aug_id", "angle")),
                             strict=True):
        duck = subprocess.run([str(BIN / "duckdb"), "-init", "storage/views.sql", "-csv"],
                              input=text, cwd=d, capture_output=True, text=True, timeout=300)
        assert duck.returncode == 0 and "Error" not in duck.stdout + duck.stderr, duck.stderr
        assert all(c in duck.stdout for c in columns), duck.stdout


def test_readme_is_a_front_door():
    """The README stays short, and links every page of docs/ (which this module runs)."""
    assert len(README.splitlines()) <= 200
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert pages == sorted(p.name for p in PAGES[1:])
    for page in pages:
        assert f"(docs/{page}" in README, page


@pytest.mark.slow
def test_readme_python_block_runs(fashion_root, tmp_path):
    code = next(b for b in blocks("python") if "hardness_scores" in b)
    res = subprocess.run([sys.executable, "-c", code + "\nprint(sorted(scores), float(loss))"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "SMARTAUG_DATA": fashion_root})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "'avh'" in res.stdout


def test_readme_experiment_file_is_accepted(tmp_path):
    from smartaug.experiment_file import load_experiment

    (tmp_path / "exp.toml").write_text(next(b for b in blocks("toml") if "budgets" not in b
                                            and "[primary]" not in b and "[[arms]]" not in b))
    (tmp_path / "space.yaml").write_text(blocks("yaml")[0])
    (tmp_path / "pets").mkdir()
    cfg = load_experiment(tmp_path / "exp.toml")
    assert cfg.model == "torchvision:resnet18" and cfg.augment.kinds == ("rotate", "grid")
    assert cfg.data.dataset == f"imagefolder:{tmp_path / 'pets'}"


def test_readme_study_file_is_accepted(tmp_path):
    from smartaug.config import study_preset
    from smartaug.experiment_file import load_study

    study = next(b for b in blocks("toml") if "budgets" in b)
    hypotheses = next(b for b in blocks("toml") if "[primary]" in b)
    (tmp_path / "study.toml").write_text(study)
    cfg = load_study(tmp_path / "study.toml")
    (tmp_path / "decided.toml").write_text(study.replace("budgets = [0.05, 0.1, 0.2]",
                                                         "budgets = [0.05, 0.1, 0.2, 0.5]")
                                           + hypotheses)
    decided = load_study(tmp_path / "decided.toml")
    assert (decided.primary.selector, decided.primary.margin) == ("avh@offset", 0.005)
    assert [h.selector for h in decided.secondary] == ["loss@easiest"]
    assert cfg.budgets == (0.05, 0.1, 0.2) and [p.name for p in cfg.pools] == ["seed", "wide"]
    assert cfg.pools == study_preset("quick").pools and cfg.data == study_preset("quick").data


def test_every_arms_snippet_loads_into_the_study_file(tmp_path):
    from smartaug.experiment_file import load_study

    study = next(b for b in blocks("toml") if "budgets" in b)
    snippets = [b for b in blocks("toml") if "[[arms]]" in b]
    assert len(snippets) >= 2
    sources = set()
    for i, arms in enumerate(snippets):
        (tmp_path / f"arms{i}.toml").write_text(study.split("[[pools]]")[0] + arms
                                                + "[[pools]]" + study.split("[[pools]]", 1)[1])
        sources |= {a.source for a in load_study(tmp_path / f"arms{i}.toml").arms}
    assert sources == {"policy", "schedule", "self-paced", "infobatch"}


@pytest.mark.slow
def test_readme_training_loop_runs(scratch):
    d, _ = scratch
    if not (d / "storage" / "selections").exists() or not list(
            (d / "storage" / "selections").glob("selection_id=*")):
        run_block(scratch, next(b for b in blocks("bash") if "S=.venv/bin/smartaug" in b))
    sid = subprocess.run([str(BIN / "smartaug"), "sql", "select selection_id from selections "
                          "where method = 'band' limit 1", "--csv"], cwd=d, capture_output=True,
                         text=True, check=True).stdout.split()[-1].strip('"')
    code = next(b for b in blocks("python") if "SelectionDataset" in b)
    res = subprocess.run([sys.executable, "-c", code.replace("SELECTION_ID", sid)], cwd=d,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("epoch ") == 2



def _anchor(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_every_link_of_the_docs_leads_somewhere():
    """Every relative link of the README, docs/ and the committed reports names a file that
    exists, and an anchor a heading of that page has (pages moved: their links moved too)."""
    broken = []
    pages = [*PAGES, *sorted((ROOT / "docs" / "results").rglob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            where = (page.parent / path).resolve() if path else page
            if not where.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and where.suffix == ".md":
                heads = {_anchor(h) for h in re.findall(r"^#+ (.*)$", where.read_text(), re.M)}
                if anchor not in heads:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


# the words a newcomer meets in the README, each linked to its glossary entry at first use
GLOSSARY_AT_FIRST_USE = {"band": "band", "replicate": "replicate", "M2": "m0-m1-m2",
                         "lake": "lake", "budget": "budget", "arm": "arm",
                         "scoring run": "scoring-run", "look": "hypothesis-margin-look",
                         "baseline": "baseline", "seed": "seed", "race": "race-reference-veto",
                         "policy": "policy", "preset": "preset", "stacked": "stack",
                         "pool": "pool", "exploratory": "exploratory", "selector": "selector"}


def test_the_readme_starts_with_its_commands_and_links_its_words():
    """The README reaches its first command within its first 40 lines, and the first use of
    each of its own words links the glossary entry that defines it (which exists)."""
    lines = README.splitlines()
    assert next(i for i, line in enumerate(lines) if line.startswith("```bash")) < 40
    heads = {_anchor(h) for h in re.findall(r"^## (.*)$", (ROOT / "docs" / "glossary.md")
                                             .read_text(), re.M)}
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", README, flags=re.S))  # words,
    # not commands or code
    for word, anchor in GLOSSARY_AT_FIRST_USE.items():
        assert anchor in heads, anchor
        first = re.search(rf"(?<![\w-]){re.escape(word)}s?(?![\w-])", prose, re.I)
        assert first, word
        after = prose[first.start() - 1:first.end() + 60]
        assert after.startswith("[") and f"(docs/glossary.md#{anchor})" in after, (word, after)
