"""``python -m layca_optax``: the ``layca-optax`` command line."""

from layca_optax.experiments.cli import main


if __name__ == "__main__":
    raise SystemExit(main())
