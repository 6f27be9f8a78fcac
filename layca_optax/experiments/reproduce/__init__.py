"""The multi-seed reproduction of the Layca paper's findings
(``layca-optax reproduce`` and ``report``).

Its modules, each importing only those before it: ``settings`` (without
JAX), ``command`` (the options), ``experiments`` (the grids, without
JAX), ``optimizers``, ``tasks`` (data and models), ``train`` (one run per
unit of work), ``rank_tests``, ``stats`` (the claims and their verdicts),
``robustness`` (rotation against re-initialization), ``figures``,
``report``, ``results_check`` (``results.json`` read back), ``run``
(:func:`~layca_optax.experiments.reproduce.run.run_reproduce`) and
``main`` (the commands).
"""
