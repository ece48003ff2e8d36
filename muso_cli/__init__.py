"""muso: hyperparameter transfer across width for first- and second-order optimizers.

Public API for your own models::

    from muso_cli import parametrize          # roles, the SP / µP / second-order µP table, init and param groups
    plan = parametrize.make_plan(model, base_model, param="somup", optimizer="kfac")
"""
__version__ = "0.1.0"

from . import parametrize  # noqa: E402,F401
