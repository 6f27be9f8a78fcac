"""``layca_optax.experiments`` loads its public names on first use."""

import pytest


pytest.importorskip("flax")
pytest.importorskip("mnist1d")

import layca_optax.experiments as experiments  # noqa: E402
from layca_optax.experiments import data, models, training  # noqa: E402
from layca_optax.experiments.demo import (  # noqa: E402
    settings as demo_settings,
    sharded,
)
from layca_optax.experiments.reproduce import run as reproduce_run  # noqa: E402


def test_every_public_name_loads_from_its_home():
    assert sorted(experiments.__all__) == sorted(experiments._HOME)
    homes = {"data": data, "models": models, "training": training}
    for name in experiments.__all__:
        value = getattr(experiments, name)
        home = homes.get(experiments._HOME[name])
        if home is not None:
            assert value is getattr(home, name)
    assert set(experiments.__all__) <= set(dir(experiments))


def test_submodules_are_attributes_and_unknown_names_fail():
    for study in ("demo", "reproduce", "modular", "lm"):
        assert getattr(experiments, study).__name__.endswith(study)
    assert demo_settings.OPTIMIZERS == experiments.OPTIMIZERS
    assert callable(reproduce_run.run_reproduce)
    assert callable(sharded.train)
    with pytest.raises(AttributeError, match="no_such_name"):
        experiments.no_such_name  # noqa: B018
