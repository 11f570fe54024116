"""Progress: one line per long step, redrawn on a terminal, a tenth at a time elsewhere, and
nothing with --quiet; the baseline's epochs say whose they are."""

from __future__ import annotations

import io

from smartaug.progress import Bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_one_line_a_tenth_not_one_a_cell():
    lines: list[str] = []
    t = iter(range(0, 10_000, 3))  # a clock: 3 s a call
    bar = Bar("cells (2 workers)", 510, lines.append, stream=io.StringIO(), clock=lambda: next(t))
    for done in range(1, 511):
        bar.update(done)
    assert len(lines) == 10  # 510 cells: 10 lines, the last at 510/510
    assert lines[0].startswith("cells (2 workers): 51/510 (10 %), ")
    assert "about" in lines[0] and "left" in lines[0]
    assert lines[-1].startswith("cells (2 workers): 510/510 (100 %), ") and "left" not in lines[-1]


def test_a_terminal_gets_one_line_redrawn_and_quiet_gets_nothing():
    tty = _Tty()
    bar = Bar("cells", 3, lambda line: None, stream=tty, clock=lambda: 0.0)
    for done in (1, 2, 3):
        bar.update(done)
    text = tty.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "cells: 3/3 (100 %)" in text
    quiet = _Tty()
    bar = Bar("cells", 3, None, stream=quiet)
    bar.update(3)
    assert quiet.getvalue() == ""


def test_the_baselines_epochs_say_they_are_the_baselines(tmp_path):
    from smartaug.config import DataConfig, TrainConfig
    from smartaug.lake import Lake
    from smartaug.steps.baseline import train_baseline
    from smartaug.steps.ingest import ingest
    from tests.conftest import write_image_folder

    lake = Lake(tmp_path / "lake")
    root = write_image_folder(tmp_path / "images", per_class=(8, 2), size=(28, 28))
    d = ingest(lake, DataConfig(f"imagefolder:{root}", grayscale=True))
    lines: list[str] = []
    train_baseline(lake, d, cfg=TrainConfig(epochs=2, batch_size=8, device="cpu"),
                   log=lines.append)
    epochs = [line for line in lines if "epoch" in line]
    assert len(epochs) == 2 and all(line.startswith("baseline lenet5: epoch") for line in epochs)
