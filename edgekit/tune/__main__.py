"""``python -m edgekit.tune TRIAL_DIR``: the trial worker a study starts for each trial."""

import sys

from .worker import worker_main

sys.exit(worker_main(sys.argv[1:]))
