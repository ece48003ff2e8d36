"""The README's Python snippets run as written."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_snippets():
    assert python_blocks()


def test_every_python_snippet_of_the_readme_runs():
    for block in python_blocks():
        namespace: dict = {}
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 (our own README)
        if "opt" in namespace:  # the API snippet: K-FAC trained three steps with the plan's groups
            opt = namespace["opt"]
            assert {g["damping_rule"] for g in opt.param_groups if "layer" in g} == {"somup"}
            assert opt.state_dict()["state"]
