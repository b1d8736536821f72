"""The documented thresholds of the drift decision (drift.py) and the promotion gate (gate.py).

No torch import: the CLI reads these defaults at start-up, and torch must load only after it
has set ``OMP_WAIT_POLICY`` (cli/adapt_command.py).
"""

from __future__ import annotations

from dataclasses import dataclass

BN_DIVERGENCE = 0.02  # BatchNorm input divergence (drift.py, signal 1)
ENTROPY_SHIFT = 0.10  # change of the original's mean normalised entropy (signal 2)
AGREEMENT_DROP = 0.10  # fall of deployed-vs-original agreement (signal 3)
MIN_AGREEMENT = 0.70  # gate rule 1: the candidate's least agreement with the reference
MIN_GAIN = 0.01  # gate rule 2: its least gain over the deployed model


@dataclass
class Thresholds:
    bn: float = BN_DIVERGENCE
    entropy: float = ENTROPY_SHIFT
    agreement: float = AGREEMENT_DROP


@dataclass
class GateRules:
    min_agreement: float = MIN_AGREEMENT
    min_gain: float = MIN_GAIN
    max_kl_increase: float = 0.0  # gate rule 3: KL(reference || candidate) at most the deployed model's + this
