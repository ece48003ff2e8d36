"""Shell completion for ``muso``: ``eval "$(muso --shell-completion install=bash)"`` completes the commands, and
after a command the config groups, options and keys (from Hydra's own completion over muso's config tree)."""
from __future__ import annotations

import os
import sys

from .config import CONF_DIR

_BASH_COMPLETION = """_muso_complete()
{
    local words=($COMP_LINE)
    local word=${COMP_WORDS[COMP_CWORD]}
    if (( COMP_CWORD <= 1 )); then
        COMPREPLY=($(compgen -W "%(commands)s" -- "$word"))
        return
    fi
    local choices=$(COMP_LINE="$COMP_LINE" %(prog)s --shell-completion query=bash 2>/dev/null)
    COMPREPLY=($(compgen -o nospace -o default -W "$choices" -- "$word"))
}
COMP_WORDBREAKS=${COMP_WORDBREAKS//=}
COMP_WORDBREAKS=$COMP_WORDBREAKS complete -o nospace -o default -F _muso_complete %(prog)s
"""


def shell_completion(argv: list[str], commands: list[str]) -> int | None:
    """``muso [command] --shell-completion install=bash`` prints a bash completion script for ``muso`` (eval it);
    the script asks ``muso --shell-completion query=bash`` for the overrides (config groups and keys, from
    Hydra's own completion over muso's config tree). None when the command line is not about completion."""
    flags = [i for i, a in enumerate(argv) if a in ("--shell-completion", "-sc")]
    if not flags or flags[0] + 1 >= len(argv):
        return None
    request = argv[flags[0] + 1]
    if request == "install=bash":
        print(_BASH_COMPLETION % {"commands": " ".join(commands), "prog": "muso"})
        return 0
    if request == "uninstall=bash":
        print("complete -r muso")
        return 0
    if request == "query=bash":
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra._internal.core_plugins.bash_completion import BashCompletion
        from hydra._internal.utils import create_config_search_path

        words = os.environ.get("COMP_LINE", "").split()[2:]  # after `muso <command>`
        line = " ".join(words) + (" " if os.environ.get("COMP_LINE", "").endswith(" ") else "")
        loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
        print(" ".join(BashCompletion(loader)._query(config_name="config", line=line)))
        return 0
    print(f"muso: --shell-completion takes install=bash, uninstall=bash or query=bash, not {request!r}.",
          file=sys.stderr)
    return 2
