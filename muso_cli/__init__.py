"""muso: hyperparameter transfer across width for first- and second-order optimizers.

Public API for your own models::

    from muso_cli import parametrize, KFAC, Shampoo, Muon, SOAP   # the table as code; the optimizers
    plan = parametrize.make_plan(model, base_model, param="somup", optimizer="kfac", delta=delta_model)
    plan.init_(model)
    opt = KFAC(plan.param_groups(model, lr=0.1), model=model, damping=1e-3)  # groups carry damping_rule
"""
__version__ = "0.1.0"

from . import parametrize  # noqa: E402
from .optim.kfac import KFAC  # noqa: E402
from .optim.muon import Muon  # noqa: E402
from .optim.shampoo import Shampoo  # noqa: E402
from .optim.soap import SOAP  # noqa: E402

__all__ = ["KFAC", "Muon", "SOAP", "Shampoo", "parametrize", "__version__"]
