"""Block-scoring criteria (plug-ins). Importing this package registers the built-in ones."""

from .base import CRITERIA, Criterion, CriterionResult, ScoringContext
from . import ttmpd  # noqa: F401  (registers "ttmpd")
from . import random_criterion  # noqa: F401  (registers "random")
from . import curl  # noqa: F401  (registers "curl")
from . import ratio  # noqa: F401  (registers "ratio")
from . import practise  # noqa: F401  (registers "practise")

__all__ = ["CRITERIA", "Criterion", "CriterionResult", "ScoringContext"]
