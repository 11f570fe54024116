"""One module per arrow of the data flow, lake in -> lake out:

    ingest -> pool -> baseline -> score (+ shards) -> select (sql/) -> retrain (band search,
    cells) -> report (sql/, templates/); reselect (a curriculum round).

``experiment`` is the list of steps of a whole experiment, in order, and its local runner.
"""
