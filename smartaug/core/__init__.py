"""Pure computation: arrays and tensors in, arrays and tensors out, no lake. Datasets,
augmentations, hardness scores, losses, training and evaluation, batched scoring, statistics."""
