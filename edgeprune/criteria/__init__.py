"""Block-scoring criteria (plug-ins). Importing this package registers the built-in ones."""

from .base import CRITERIA, Criterion, CriterionResult, ScoringContext
from . import ttmpd  # noqa: F401  (registers "ttmpd")

__all__ = ["CRITERIA", "Criterion", "CriterionResult", "ScoringContext"]
