"""memplan: exact GPU memory estimates for fine-tuning and serving LLMs, before the job starts."""

from memplan.estimate import estimate
from memplan.result import Estimate
from memplan.spec import JobSpec, SpecError, parse_spec

__all__ = ["Estimate", "JobSpec", "SpecError", "estimate", "parse_spec"]
__version__ = "0.1.0"
