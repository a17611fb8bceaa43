"""The stages of a run, in order: the one list the pipeline runs and the command line offers
(``--until``, ``--only``). Imports nothing, so the CLI can name them without loading the pipeline."""

TRAIN_STAGES = ("teacher", "student", "pruned", "qat")
ALL_STAGES = (*TRAIN_STAGES, "convert", "eval", "report")
