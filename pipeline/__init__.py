"""smartaug: AVH-guided augmentation selection as a data pipeline.

``pipeline.SelectionDataset(storage, selection_id)`` is a PyTorch Dataset of a selection (the
originals plus its augmentations), for your own training loop; imported on first use, so
``import pipeline`` stays light.
"""

__all__ = ["SelectionDataset"]


def __getattr__(name: str):
    if name == "SelectionDataset":
        from pipeline.steps.export import SelectionDataset

        return SelectionDataset
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
