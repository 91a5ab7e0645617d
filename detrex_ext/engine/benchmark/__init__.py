"""Benchmarks: timing primitives, synthetic inputs, inference and training-step measurements.

``tools/benchmark.py`` is the command line over these (see its docstring for the recipe and the
side-by-side comparison with the official code); usable from a notebook::

    from detrex_ext.engine.benchmark import benchmark_inference, benchmark_training, time_runs
"""

from .inputs import (
    instance_counts,
    synthetic_image,
    synthetic_image_batch,
    synthetic_training_batch,
)
from .profile import format_profile, module_scopes, profile_call
from .runs import benchmark_inference, benchmark_training
from .side_by_side import (
    Contender,
    compare_inference_outputs,
    compare_losses,
    format_side_by_side,
    side_by_side_inference,
    side_by_side_training,
)
from .timing import (
    NetworkTimer,
    TrainingPhaseTimer,
    alternate,
    load_average,
    outputs_to_cpu,
    peak_memory_mib,
    release_memory,
    summarize,
    time_runs,
    timed,
)

__all__ = [
    "Contender",
    "NetworkTimer",
    "TrainingPhaseTimer",
    "alternate",
    "benchmark_inference",
    "benchmark_training",
    "compare_inference_outputs",
    "compare_losses",
    "format_profile",
    "format_side_by_side",
    "module_scopes",
    "instance_counts",
    "load_average",
    "outputs_to_cpu",
    "peak_memory_mib",
    "profile_call",
    "release_memory",
    "side_by_side_inference",
    "side_by_side_training",
    "summarize",
    "synthetic_image",
    "synthetic_image_batch",
    "synthetic_training_batch",
    "time_runs",
    "timed",
]
