"""The REAL job, built from a spec and its resolved choices with transformers, PEFT, bitsandbytes and torch: the
model (model.py), the method (method.py), the optimizer (optimizer.py), the batch, the training step and
generate() (step.py). One copy of that code serves the CUDA profiling harness (memplan.profiling, real tensors)
and the trace engine (memplan.engines.trace, fake tensors). torch and the libraries are imported only when a
function runs."""

from memplan.stack.method import TASK_TYPES, StackError, apply_method
from memplan.stack.model import (CHECKPOINT_CACHE, checkpoint_dir, load_model, prepare_checkpoint, raw_config,
                                 torch_dtype)
from memplan.stack.optimizer import Lion, import_optimizer_modules, make_optimizer
from memplan.stack.step import PhaseMeter, generate, make_batch, train_steps

__all__ = ["CHECKPOINT_CACHE", "Lion", "PhaseMeter", "StackError", "TASK_TYPES", "apply_method", "checkpoint_dir",
           "generate", "import_optimizer_modules", "load_model", "make_batch", "make_optimizer", "prepare_checkpoint",
           "raw_config", "torch_dtype", "train_steps"]
