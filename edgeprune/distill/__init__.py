"""Recovering accuracy after pruning: teacher targets, the distillation loop, BatchNorm statistics, hardware choices."""
