"""Auto-compress to a device budget: search for the smallest model that fits one target.

``tune(recipe_path, target=..., out=...)`` searches the student's width, pruning (a sparsity or
an m:n pattern, or none) and the quantization scheme (QAT int8, post-training int8, and on
microcontrollers post-training int16x8) for models that fit the target's flash, RAM and latency
budgets and stay within ``max_accuracy_drop`` points of the teacher's accuracy. Every trial is a
real, ordinary pipeline run of a recipe (:class:`edgekit.pipeline.Run`) in ``trials/<n>/``, in its
own process; its flash (model file), tensor arena and accuracy are measured by the evaluator, as
in ``edgekit run``. Latency is the device's measurement when there is one, else the calibrated
estimate of :mod:`edgekit.estimate` (``latency_basis`` says which; ``null`` when neither).

Before training, a trial whose student cannot fit is pruned early from lower bounds read off the
untrained Keras model (:func:`footprint_bounds`): the bytes of its weights alone, and the largest
input + output activation pair one op needs at once. Both are bounds, not guesses: a model whose
bound is over the budget cannot fit, so no trial that would have fitted is pruned. The flash bound
counts every weight, zero or not: TFLite (and TFLite Micro) store pruned tensors dense, so
sparsity does not shrink the model file; it only helps compressed (gzip) sizes.

The teacher is trained once (``teacher/``, a run of ``base.yaml`` up to the teacher) and its stage
is linked into every trial's run directory with its manifest entry, so the pipeline's fingerprints
find it current and skip it.

The study lives in an Optuna SQLite database (``study.db``): ``resume=True`` continues it. A trial
still ``RUNNING`` there when the study starts again was interrupted: it is marked ``FAIL``
(``interrupted``), its parameters are queued again, and the retry continues in the interrupted
trial's run directory, so its finished stages are not trained twice. Finished trials are never
rerun. Trials run in parallel worker processes (``jobs``), each training with
``cores // jobs`` threads. With ``storage`` a database URL (:mod:`edgekit.tune.storage`, e.g.
PostgreSQL) several machines share one study: each runs its trials in its own ``out``, records
the trial's ``host`` and heartbeats, and fails and requeues the trials of a machine gone silent.

The best trial is the one with the smallest model file among those that fit every budget and
meet the accuracy floor (ties: lower latency, then higher accuracy, then the earlier trial). Its
recipe is written as ``best.yaml`` (``edgekit run best.yaml --out DIR`` reproduces it), and
``tune.json``, ``tune.md`` and ``tune.html`` list every trial and the Pareto fronts (accuracy
against flash and against latency, among the trials that fit the budgets).

Example::

    result = tune(Path("recipes/quickstart.yaml"), target="cortex-m4", out=Path("runs/tune"),
                  max_accuracy_drop=1.0, trials=12)
    result["best"]["flash_bytes"], result["best"]["accuracy"]
"""

from .bounds import early_verdict, footprint_bounds
from .results import SCHEMA, load_result, measured_row, pareto_numbers, pick_best, trial_row, write_outputs
from .space import (PRUNINGS, SCHEMES, WIDTHS, Space, base_params, prune_choice, scheme_choice, space_for, trial_recipe,
                    tuned_base)
from .study import MAX_REPEATS, Event, constraints, default_cores, default_jobs, tune
from .worker import THREADS_ENV, prepare_trial_dir, worker_main

__all__ = ["MAX_REPEATS", "PRUNINGS", "SCHEMA", "SCHEMES", "THREADS_ENV", "WIDTHS", "Event", "Space", "base_params",
           "constraints", "default_cores", "default_jobs", "early_verdict", "footprint_bounds", "load_result",
           "measured_row", "pareto_numbers", "pick_best", "prepare_trial_dir", "prune_choice", "scheme_choice",
           "space_for", "trial_recipe", "trial_row", "tune", "tuned_base", "worker_main", "write_outputs"]
