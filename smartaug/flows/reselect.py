"""Prefect flow ``reselect``: one curriculum round for an experiment (default: the newest),
the same steps ``smartaug reselect`` runs, each a task (``smartaug.flows.runners.PrefectRunner``; never
cached: every round starts from the newest model).

The newest model of the lineage (or ``model_id``) re-scores the pool, the experiment's band spec
re-selects, and the drift against the previous selection lands in the drift table; with
``retrain`` the round first fine-tunes that model on the current selection and registers it as
the next model (``parent_model_id``). The report gains a drift-over-rounds section.
"""

from __future__ import annotations

from prefect import flow

from smartaug.flows.failures import fail_plainly
from smartaug.flows.runners import PrefectRunner
from smartaug.lake import Lake
from smartaug.steps import reselect as steps

# a round depends on the lake's newest model, not only on its inputs: never cached
_OPTIONS = {steps.reselect: {"cache": False}, steps.report: {"cache": False}}


@flow(name="reselect", log_prints=True)
@fail_plainly
def reselect(experiment_id: str | None = None, model_id: str | None = None,
             retrain: bool = False, storage: str | None = None,
             schedule: str | None = None, trust_model: list[str] | None = None) -> dict:
    """One curriculum round, as ``smartaug reselect`` (the same defaults: ``retrain`` off;
    the reselect/nightly deployment turns it on); returns the ids it produced and the drift.
    ``schedule`` (``ORDER[:PACING[:START]]``, e.g. ``easy-to-hard:linear:0.2``): the round's
    fine-tuning runs that curriculum over the whole pool as the newest model scores it.
    ``trust_model``: models of yours whose checkpoints the round may rebuild (``--trust-model``)."""
    runner = PrefectRunner(Lake(storage).url(), _OPTIONS)
    out = runner.call(steps.reselect, experiment_id, model_id, retrain, schedule,
                      tuple(trust_model or ()))
    out["report"] = runner.call(steps.report, out["experiment_id"])
    print(f"round {out['round']}: selection {out['selection_id']} (previous "
          f"{out['previous_selection_id']}), drift {out['drift']}, "
          f"child model {out['child_model_id']}")
    return out


if __name__ == "__main__":
    reselect()
