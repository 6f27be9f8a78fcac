"""The demo: Layca against tuned SGD and Adam on MNIST-1D, with the
layer-rotation curves (``layca-optax demo``).

Its modules, each importing only those before it: ``settings`` (the
tuned rates and defaults, without JAX), ``command`` (the options),
``train`` (the optimizers and runs), ``figures``, ``report``, ``run``
(:func:`~layca_optax.experiments.demo.run.run_demo`) and ``main`` (the
command); ``sharded`` runs the demo's CNN over a mesh of devices.
"""
