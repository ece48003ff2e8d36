"""Configuration: Hydra composition with friendly errors.

Every command composes its config through :func:`compose` (Hydra's override grammar, the tree under
``conf/``); :mod:`muso_cli.validate` then checks it. Bad overrides raise :class:`~muso_cli.errors.UsageError`,
which the CLI prints as one paragraph naming the key and the fix, with exit status 2.
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from .errors import UsageError

CONF_DIR = Path(__file__).resolve().parent / "conf"  # a link to the repository's conf/ (packaged with it)

# Keys muso no longer reads: key → (why it went, what to do instead), said when an override names one.
REMOVED_KEYS = {
    "launcher.batch": ("was removed: batched trials (several trials trained as one stacked model) were a second "
                       "training engine that gained 0.9–1.9× on CPU, changed results at large lr and covered 4 of 6 "
                       "optimizers (docs/results.md §9).",
                       "remove launcher.batch; to run trials side by side use launcher=pool (launcher.workers=N on "
                       "CPU, launcher.per_gpu=N to pack trials on each GPU)."),
}


def group_options(group: str, config_dir: Path | Sequence[Path] = CONF_DIR) -> list[str]:
    """Names of the options of a config group (the yaml files under <config dir>/<group>/, over every folder
    given)."""
    dirs = [config_dir] if isinstance(config_dir, (str, Path)) else config_dir
    return sorted({p.stem for d in dirs for p in (Path(d) / group).glob("*.yaml")})


def search_path_override(config_dirs: Sequence[str | Path]) -> str:
    """The Hydra override ``hydra.searchpath=[file:///abs/dir, ...]`` that adds ``config_dirs`` to the config
    search path (what ``--config-dir`` does). Record it with a study's overrides, so that ``muso transfer`` and
    ``muso report`` compose the study's config again from the same folders. UsageError for a missing folder."""
    entries = []
    for d in config_dirs:
        path = Path(d).expanduser().resolve()
        if not path.is_dir():
            raise UsageError("--config-dir", f"{d} is not a folder.", "give the folder that holds your config groups "
                             "(e.g. conf/, with conf/model/mynet.yaml in it).")
        entries.append(f"file://{path}")
    return f"hydra.searchpath=[{','.join(entries)}]"


def _search_dirs(overrides: Sequence[str]) -> list[Path]:
    """muso's conf/ and the folders a hydra.searchpath override adds (file:// entries)."""
    dirs = [CONF_DIR]
    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+~") == "hydra.searchpath":
            dirs += [Path(e.strip().strip("'\"")[len("file://"):]) for e in value.strip("[]").split(",")
                     if e.strip().strip("'\"").startswith("file://")]
    return dirs


class ConfigShown(Exception):
    """The composed config was printed (``--cfg job``): the command stops there."""


# ``--cfg job``: the first composition of a command prints its config and ends the command (exit 0). The CLI sets
# it for one command; every other caller leaves it off.
SHOW_FIRST_COMPOSITION = {"on": False}


def compose(overrides: Sequence[str] = (), *, config_name: str = "config",
            config_dirs: Sequence[str | Path] = ()) -> DictConfig:
    """Compose the config tree with Hydra overrides (``key=value``, ``group=option``, ``+key=value``).

    ``config_dirs``: more config folders in the search path, after muso's own conf/, as Hydra's ``--config-dir``
    adds them (a ``hydra.searchpath=[file://...]`` override does the same and may be given instead): your
    ``<dir>/model/mynet.yaml`` is then ``model=mynet``. An option that muso's conf/ has too is muso's (Hydra's
    rule: the first folder of the search path that has it). Raises UsageError for unknown groups/options/keys,
    unparsable overrides, missing folders and config files of your own that are not plain YAML mappings.
    """
    import yaml
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import (ConfigCompositionException, MissingConfigException,
                              OverrideParseException)
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    if config_dirs:
        if any(o.partition("=")[0].lstrip("+~") == "hydra.searchpath" for o in overrides):
            raise UsageError("hydra.searchpath", "is given twice: as an override and as config folders.",
                             "give the folders one way (--config-dir, or hydra.searchpath=[file://...]).")
        overrides.append(search_path_override(config_dirs))
    for o in overrides:
        if "=" in o and not o.partition("=")[0].strip("+~ "):
            raise UsageError(o, "has no key before '='.", "write key=value or group=option, e.g. model.width=512.")
    dirs = _search_dirs(overrides)
    missing = [d for d in dirs[1:] if not d.is_dir()]
    if missing:
        raise UsageError("hydra.searchpath", f"{missing[0]} is not a folder (the config search path names it).",
                         "give folders that exist (--config-dir DIR); a study made elsewhere records the folders "
                         "of that machine: copy them here, or run `muso report`, which needs none.")
    _check_own_options(overrides, dirs)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="muso"):
        try:
            cfg = hydra_compose(config_name, overrides=overrides)
            if SHOW_FIRST_COMPOSITION["on"]:
                SHOW_FIRST_COMPOSITION["on"] = False
                print(OmegaConf.to_yaml(cfg))
                raise ConfigShown
            return cfg
        except MissingConfigException as e:
            failure: Exception = e
        except (OverrideParseException, ConfigCompositionException) as e:
            failure = e
        except (ValueError, TypeError, OmegaConfBaseException, yaml.YAMLError) as e:  # Hydra's other refusals
            raise UsageError("overrides", f"the config cannot be composed from {' '.join(overrides)}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}.",
                             "check the overrides and the config files of your own (`muso run --cfg job` "
                             "prints the composed config).") from None
    # Build the message outside Hydra's global context: it may compose the defaults to list valid keys.
    if isinstance(failure, MissingConfigException):
        raise _missing_option_error(str(failure), dirs) from None
    if isinstance(failure, OverrideParseException):
        raise _syntax_error(failure, overrides) from None
    raise _composition_error(str(failure), dirs) from None


def _check_own_options(overrides: Sequence[str], dirs: Sequence[Path]) -> None:
    """UsageError naming the group when a ``group=option`` override picks a config file of your own (found in a
    folder of the search path after muso's conf/) that is not a plain YAML mapping: malformed, a list, empty, or
    tagged (``!!python/...``: muso reads plain YAML only, so a tag is an error, never code)."""
    import yaml

    for o in overrides:
        group, _, option = o.lstrip("+~").partition("=")
        if not option or "." in group or group.startswith("hydra") or (CONF_DIR / group / f"{option}.yaml").exists():
            continue
        path = next((Path(d) / group / f"{option}.yaml" for d in dirs[1:]
                     if (Path(d) / group / f"{option}.yaml").is_file()), None)
        if path is None:
            continue
        try:
            node = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(group, f"{path} cannot be read as YAML: {' '.join(str(e).split())[:300]}.",
                             "fix the file: plain YAML of key: value lines (no !!python tags: muso runs no code "
                             "from a config file).") from None
        if not isinstance(node, dict):
            raise UsageError(group, f"{path} holds {'nothing' if node is None else 'a ' + type(node).__name__}, not "
                             "a config of key: value pairs.", f"write the {group}'s keys in it, e.g. `name: "
                             f"{option}` (muso's conf/{group}/ has examples).")


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


def _missing_option_error(message: str, dirs: Sequence[Path] = (CONF_DIR,)) -> UsageError:
    m = re.search(r"Could not find '([^']+)'", message)
    missing = m.group(1) if m else "?"
    group, _, option = missing.rpartition("/")
    if not group:  # a whole group that does not exist, e.g. `foo=bar`
        return UsageError(missing, "is not a config group or key.",
                          f"config groups are: {', '.join(_groups(dirs))}.")
    options = group_options(group, dirs)
    return UsageError(group, f"has no option '{option}'. Available {group} options: {', '.join(options)}.",
                      f"pick one of them, e.g. {group}={options[0] if options else '...'}; for a "
                      f"{group}/{option}.yaml of your own, add its config folder to the search path "
                      f"(hydra.searchpath=[file:///abs/path/conf]).")


def _composition_error(message: str, dirs: Sequence[Path] = (CONF_DIR,)) -> UsageError:
    m = re.search(r"Could not override '([^']+)'", message)
    if m and m.group(1) in REMOVED_KEYS:
        return UsageError(m.group(1), *REMOVED_KEYS[m.group(1)])
    if m:
        key = m.group(1)
        parent = key.rpartition(".")[0]
        known = ""
        if parent:
            try:
                node = OmegaConf.select(compose((), config_dirs=dirs[1:]), parent)
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


def _groups(dirs: Sequence[Path] = (CONF_DIR,)) -> list[str]:
    return sorted({p.name for d in dirs if Path(d).is_dir() for p in Path(d).iterdir() if p.is_dir()})


def to_container(cfg: DictConfig) -> dict:
    """Plain, resolved dict of a config (without Hydra's own node). ``trainer.command`` stays a template: its
    interpolations (``${optimizer.lr}``) are the trial's values, resolved when the trial runs
    (muso_cli.trainers.command), after the study has set them."""
    out = OmegaConf.to_container(cfg, resolve=True)
    out.pop("hydra", None)
    trainer = cfg.get("trainer") if isinstance(cfg, DictConfig) else None
    if isinstance(trainer, DictConfig) and "command" in trainer:
        out["trainer"]["command"] = OmegaConf.to_container(trainer, resolve=False)["command"]
    return out


def expand_sweeps(overrides: Sequence[str]) -> list[list[str]]:
    """The override list of each job of a multirun (cartesian product of sweeps; hydra.* keys left out).

    Sweeps Hydra cannot enumerate up front (``interval()`` for Optuna, ``glob()``) are validated with their
    first value only.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:
        return [list(overrides)]  # let compose() report the syntax error
    choices: list[list[str]] = []
    for o in parsed:
        key = o.get_key_element()
        if key.lstrip("+~").startswith("hydra"):
            continue
        if not o.is_sweep_override():
            choices.append([o.input_line])
            continue
        try:
            values = list(o.sweep_string_iterator())
        except Exception:  # interval(), glob(): not enumerable here
            continue
        choices.append([f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*choices)]
