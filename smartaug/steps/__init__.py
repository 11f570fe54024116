"""One module per arrow of the data flow, lake in -> lake out: ingest, pool, baseline, score,
select (sql/), retrain, report (sql/, templates/), reselect; ``experiment`` is their order."""
