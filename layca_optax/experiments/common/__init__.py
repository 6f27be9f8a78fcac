"""What the studies share besides the data, the models and the training
loop: the command line's parts (argument types, checks of ``--out``, the
extras), SIGINT/SIGTERM handling, worker processes, atomic files, the
progress bars, the per-run summaries and the numbers' formats."""
