"""muso: hyperparameter transfer across width for first- and second-order optimizers.

Public API for your own models::

    from muso_cli import parametrize, KFAC, Shampoo, Muon, SOAP   # the table as code; the optimizers
    plan = parametrize.make_plan(model, base_model, param="somup", optimizer="kfac", delta=delta_model)
    plan.init_(model)
    opt = KFAC(plan.param_groups(model, lr=0.1), model=model, damping=1e-3)  # groups carry damping_rule
"""
__version__ = "0.1.0"

# Imported on first use (PEP 562): ``import muso_cli.<module>`` for the CLI, or trainer=python's subprocess
# (muso_cli.trainers.entry), should not pay torch's import (about 1 s) unless it uses the optimizers.
_PUBLIC = {"parametrize": ".parametrize", "KFAC": ".optim.kfac", "Muon": ".optim.muon", "Shampoo": ".optim.shampoo",
           "SOAP": ".optim.soap"}


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'muso_cli' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(_PUBLIC[name], __name__)
    return module if name == "parametrize" else getattr(module, name)


__all__ = ["KFAC", "Muon", "SOAP", "Shampoo", "parametrize", "__version__"]
