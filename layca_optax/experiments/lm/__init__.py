"""A small character-level language model: rotation control against AdamW
and Muon (``layca-optax lm``).

Its modules, each importing only those before it: ``settings`` (without
JAX), ``command`` (the options), ``optimizers`` (each family's optimizer),
``train`` (one compiled run per family, tuned then seeded), ``stats``
(the target, steps to it, verdicts), ``figures``, ``report``, ``run``
(:func:`~layca_optax.experiments.lm.run.run_lm`) and ``main`` (the
command).
"""
