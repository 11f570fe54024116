"""Prefect flow ``reselect``: one curriculum round for an experiment (default: the newest).

The newest model of the lineage (or ``model_id``) re-scores the pool, the experiment's band spec
re-selects, and the drift against the previous selection lands in the drift table; with
``retrain`` the round first fine-tunes that model on the current selection and registers it as
the next model (``parent_model_id``). The report gains a drift-over-rounds section.
"""

from __future__ import annotations

from prefect import flow, task

from flows.failures import fail_plainly, retry_transient
from pipeline.lake import Lake
from pipeline.steps.report import write_report
from pipeline.steps.reselect import reselect as run_round


@task(name="reselect-round", retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_transient)
@fail_plainly
def round_task(storage: str | None, experiment_id: str | None, model_id: str | None,
               retrain: bool) -> dict:
    """Re-score, re-select, record drift (and train the round's model)."""
    return run_round(Lake(storage), experiment_id=experiment_id, model_id=model_id,
                     retrain=retrain)


@task(name="report", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_transient)
@fail_plainly
def report_task(storage: str | None, experiment_id: str) -> str:
    """Rewrite the experiment's report with the drift-over-rounds section."""
    lake = Lake(storage)
    write_report(lake, experiment_id)
    return lake.url("reports", experiment_id)


@flow(name="reselect", log_prints=True)
@fail_plainly
def reselect(experiment_id: str | None = None, model_id: str | None = None,
             retrain: bool = True, storage: str | None = None) -> dict:
    """One curriculum round; returns the ids it produced and the drift."""
    out = round_task(storage, experiment_id, model_id, retrain)
    out["report"] = report_task(storage, out["experiment_id"])
    print(f"round {out['round']}: selection {out['selection_id']} (previous "
          f"{out['previous_selection_id']}), drift {out['drift']}, "
          f"child model {out['child_model_id']}")
    return out


if __name__ == "__main__":
    reselect()
