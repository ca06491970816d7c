"""The shape chalicelib keeps (issue 35): no module over 300 lines, no
constructor over 8 parameters (what travels together is grouped)."""

import ast

from crowdtrain.paths import ROOT

MAX_LINES, MAX_PARAMETERS = 300, 8


def modules():
    return sorted((ROOT / "chalicelib").rglob("*.py"))


def test_no_module_is_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_no_constructor_takes_more_than_8_parameters():
    wide = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                a = node.args
                count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - 1  # less self
                if count > MAX_PARAMETERS:
                    wide[f"{path.relative_to(ROOT)}:{node.lineno}"] = count
    assert not wide, wide
