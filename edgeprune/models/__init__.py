"""Model catalogue and structure: zoo (names, weights, preprocessing), removable blocks, stages, block surgery, FLOPs."""
