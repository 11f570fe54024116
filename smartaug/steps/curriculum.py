"""A study arm's curriculum inside one training (``smartaug.core.curriculum``), wired to the
lake: the pool's baseline scores, the in-process re-scorings by the model being trained
(each a scoring run linked to the training run and its epoch, written only when the
training is recorded) and the counts the study compares arms by.

    smartaug sql "select epoch, avg(avh) from scores join scoring_runs using (scoring_run_id)
                  where train_run_id = 'run-...' group by epoch order by epoch"
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from smartaug.config import POSITIONS, SCORE_DIRECTIONS, Arm
from smartaug.core import curriculum as C
from smartaug.core.scoring import score_arrays
from smartaug.lake import Lake, content_id

__all__ = ["CellCurriculum", "RESCORE_BATCH"]

RESCORE_BATCH = 1024  # items per scoring batch: inference only, larger than a training batch


class CellCurriculum:
    """The curriculum of one study cell: ``arm`` on the pool ``pool_id`` (its items in
    ``data``'s order), ``n`` augmentations an epoch on average (the static selectors' count
    at the cell's budget), ranked first by the baseline's ``scoring_run_id``."""

    def __init__(self, lake: Lake, arm: Arm, data, *, pool_id: str, scoring_run_id: str,
                 n: int, epochs: int, per_class: bool):
        self.lake, self.arm, self.data = lake, arm, data
        self.pool_id, self.scoring_run_id = pool_id, scoring_run_id
        self.n, self.epochs, self.per_class = n, epochs, per_class
        self.n_orig = len(data.train)
        self.pool_labels = data.aug_labels
        self.pool_images = data.pool_images()
        self.pending: list[tuple[int, dict, float]] = []  # re-scorings to write with the run
        self.run_id: str | None = None
        self.dataset_id = lake.row("pools", pool_id)["dataset_id"]

    def identity(self) -> dict:
        """What the training run's id depends on beyond the protocol."""
        return {"arm": self.arm.to_dict(), "scoring_run_id": self.scoring_run_id,
                "n": self.n, "per_class": self.per_class}

    def build(self, run_id: str, seed: int):
        """The ``smartaug.core.curriculum`` plan source for the training ``run_id``."""
        self.run_id, a = run_id, self.arm
        if a.source == "infobatch":
            return C.InfoBatch(self.n_orig + len(self.pool_labels), self.epochs,
                               prune=a.prune, anneal=a.anneal, seed=seed)
        direction = SCORE_DIRECTIONS[a.score]
        scores = self.data.pool_scores(self.lake, self.scoring_run_id, a.score)
        if a.source == "self-paced":
            return C.SelfPaced(self.n_orig, scores, self.pool_labels, self.n,
                               every=a.rescore_every, direction=direction,
                               lo=POSITIONS[a.position](self.n / len(self.pool_labels)),
                               per_class=self.per_class, rescore=self.rescore)

        def reorder(s):
            return C.rank(s, self.pool_labels, direction=direction, per_class=self.per_class,
                          order=a.order, seed=seed)

        sizes = C.pacing_sizes(a.pacing, self.epochs, self.n, len(self.pool_labels),
                               start=a.start, growth=a.growth, step=a.step)
        return C.Schedule(self.n_orig, reorder(scores), sizes, every=a.rescore_every,
                          rescore=self.rescore, reorder=reorder)

    def rescore(self, model, epoch: int) -> np.ndarray:
        """Score the pool with the model being trained (``score_batches``, eval mode, in this
        process); keep the run to write with the training; return the arm's score."""
        t0 = time.perf_counter()
        cols = score_arrays(model, self.pool_images, self.pool_labels, batch_size=RESCORE_BATCH)
        self.pending.append((epoch, cols, time.perf_counter() - t0))
        return cols[self.arm.score]

    def commit(self, device: str) -> list[str]:
        """Write every re-scoring as a scoring run of the pool (``train_run_id``, ``epoch``);
        returns their ids. Called once the training has succeeded, before its run row."""
        aug_ids = pa.array(list(self.data.aug_index))
        out = []
        for epoch, cols, seconds in self.pending:
            sid = content_id("scores", {"train_run_id": self.run_id, "epoch": epoch,
                                        "pool_id": self.pool_id})
            n = len(self.pool_labels)
            self.lake.write("scores", sid, {
                "scoring_run_id": [sid] * n, "model_id": [None] * n,
                "pool_id": [self.pool_id] * n, "item_id": aug_ids, "label": self.pool_labels,
                **cols})
            self.lake.write("scoring_runs", sid, {
                "scoring_run_id": [sid], "model_id": [None], "pool_id": [self.pool_id],
                "dataset_id": [self.dataset_id], "split": [None], "n_items": [n],
                "n_undefined": [int(np.isnan(cols["avh"]).sum())],
                "batch_size": [RESCORE_BATCH], "device": [device], "seconds": [seconds],
                "train_run_id": [self.run_id], "epoch": [epoch]})
            out.append(sid)
        self.pending.clear()
        return out
