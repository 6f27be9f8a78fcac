"""Modular arithmetic with a transformer: rotation control against tuned
weight decay (``layca-optax modular``, and a section of ``reproduce``).

Its modules, each importing only those before it: ``settings`` (without
JAX), ``command`` (the options), ``train`` (one compiled run per family),
``stats`` (the picks and verdicts), ``figures``, ``report``, ``run``
(:func:`~layca_optax.experiments.modular.run.run_modular`) and ``main``
(the command).
"""
