"""Configuration: Hydra composition with friendly errors.

Every command composes its config through :func:`compose` (Hydra's override grammar, the tree under
``conf/``); :mod:`muso_cli.validate` then checks it. Bad overrides raise :class:`~muso_cli.errors.UsageError`,
which the CLI prints as one paragraph naming the key and the fix, with exit status 2.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from .errors import UsageError

CONF_DIR = Path(__file__).resolve().parent / "conf"  # a link to the repository's conf/ (packaged with it)


def group_options(group: str, config_dir: Path = CONF_DIR) -> list[str]:
    """Names of the options of a config group (the yaml files under conf/<group>/)."""
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def compose(overrides: Sequence[str] = (), *, config_name: str = "config") -> DictConfig:
    """Compose the config tree with Hydra overrides (``key=value``, ``group=option``, ``+key=value``).

    Raises UsageError for unknown groups/options/keys and unparsable overrides.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import (ConfigCompositionException, MissingConfigException,
                              OverrideParseException)

    overrides = list(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="muso"):
        try:
            return hydra_compose(config_name, overrides=overrides)
        except MissingConfigException as e:
            failure: Exception = e
        except (OverrideParseException, ConfigCompositionException) as e:
            failure = e
    # Build the message outside Hydra's global context: it may compose the defaults to list valid keys.
    if isinstance(failure, MissingConfigException):
        raise _missing_option_error(str(failure)) from None
    if isinstance(failure, OverrideParseException):
        raise _syntax_error(failure, overrides) from None
    raise _composition_error(str(failure)) from None


def _syntax_error(failure: Exception, overrides: list[str]) -> UsageError:
    """An override Hydra's lexer cannot read, named as the user wrote it, with the fix for the usual causes."""
    text = str(failure)
    bad = next((o for o in overrides if o in text), text.splitlines()[0].split(": ", 1)[-1])
    key = bad.split("=", 1)[0] if "=" in bad else "override"
    if "=" in bad and not bad.split("=", 1)[1].isascii():
        fix = f"quote the value: {key}='{bad.split('=', 1)[1]}' (in a shell: \"{key}='...'\")."
    else:
        fix = ("write key=value, group=option or +new_key=value; quote values with spaces or special characters "
               "(https://hydra.cc/docs/advanced/override_grammar/basic/).")
    return UsageError(key, f"{bad!r} is not valid Hydra override syntax.", fix)


def _missing_option_error(message: str) -> UsageError:
    m = re.search(r"Could not find '([^']+)'", message)
    missing = m.group(1) if m else "?"
    group, _, option = missing.rpartition("/")
    if not group:  # a whole group that does not exist, e.g. `foo=bar`
        return UsageError(missing, "is not a config group or key.",
                          f"config groups are: {', '.join(_groups())}.")
    options = group_options(group)
    return UsageError(group, f"has no option '{option}'. Available {group} options: {', '.join(options)}.",
                      f"pick one of them, e.g. {group}={options[0] if options else '...'}.")


def _composition_error(message: str) -> UsageError:
    m = re.search(r"Could not override '([^']+)'", message)
    if m:
        key = m.group(1)
        parent = key.rpartition(".")[0]
        known = ""
        if parent:
            try:
                node = OmegaConf.select(compose(()), parent)
                if isinstance(node, DictConfig):
                    known = f" Keys under {parent}: {', '.join(map(str, node.keys()))}."
            except UsageError:
                pass
        return UsageError(key, f"is not a config key.{known}",
                          f"check the spelling (`muso run --cfg job` prints every key); an argument of your own "
                          f"model or data (a node with _target_) is added with +{key}=<value>.")
    m = re.search(r"Ambiguous value for argument '([^=']+)=", message)
    if m:
        return UsageError(m.group(1), "has a comma-separated value, which is a sweep.",
                          "use -m (multirun) to sweep, key=[a,b] for a list, or quote the value.")
    return UsageError("overrides", message.splitlines()[0], "see `muso --help`.")


def _groups() -> list[str]:
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())


def to_container(cfg: DictConfig) -> dict:
    """Plain, resolved dict of a config (without Hydra's own node)."""
    out = OmegaConf.to_container(cfg, resolve=True)
    out.pop("hydra", None)
    return out
