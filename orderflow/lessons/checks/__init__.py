"""One module per notebook, each registering its exercises with ``@exercise``; every module in
this package is imported by ``orderflow.lessons.exercise.load_checks()``, so a new notebook's
checks need no edit anywhere else."""
