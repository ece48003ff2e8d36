"""muso: hyperparameter transfer across width for first- and second-order optimizers.

Public API for your own models::

    from muso_cli import parametrize, KFAC, Shampoo   # the table as code; second-order optimizers
    plan = parametrize.make_plan(model, base_model, param="somup", optimizer="kfac", delta=delta_model)
    plan.init_(model)
    opt = KFAC(plan.param_groups(model, lr=0.1), model=model, damping=1e-3)  # groups carry damping_rule
"""
__version__ = "0.1.0"

from . import parametrize  # noqa: E402
from .optim.kfac import KFAC  # noqa: E402
from .optim.shampoo import Shampoo  # noqa: E402

__all__ = ["KFAC", "Shampoo", "parametrize", "__version__"]
