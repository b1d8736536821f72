"""Latency on the target device: timing statistics, device fingerprint, per-device block-removal profiles, backends."""
