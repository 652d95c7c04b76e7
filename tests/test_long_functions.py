"""``scripts/long_functions.py``: the function-length guard of every package and ``scripts/``."""

from __future__ import annotations

import importlib.util

from tests.suite_helpers import ROOT

# a tool of scripts/, not a module of the package: loaded from its file
_SPEC = importlib.util.spec_from_file_location(
    "long_functions", ROOT / "scripts" / "long_functions.py"
)
long_functions = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(long_functions)


def test_counts_the_def_line_through_the_last_line_of_functions_and_methods(tmp_path):
    body = "\n".join(f"        x{i} = {i}" for i in range(8))  # 8 lines + the def line = 9
    source = f"def short():\n    return 1\n\n\nclass A:\n    def long(self):\n{body}\n"
    (tmp_path / "m.py").write_text(source)
    assert long_functions.long_functions([tmp_path], limit=8) == [(9, f"{tmp_path}/m.py:6", "long")]
    assert long_functions.long_functions([tmp_path / "m.py"], limit=9) == []


def test_no_function_in_the_code_is_over_60_lines():
    assert long_functions.long_functions(long_functions.CODE, limit=60) == []
