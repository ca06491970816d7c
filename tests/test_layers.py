"""chalicelib's folders are its layers (pyproject.toml's import-linter contract): the check passes
on the tree, and fails on a copy given one upward import, so it cannot pass by checking nothing."""

import shutil
import subprocess
import sys

from crowdtrain.paths import ROOT

LINT = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())",
    "--no-cache",
]


def lint(root):
    return subprocess.run(
        LINT,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
    )


def test_the_folders_of_chalicelib_import_only_the_layers_below_them():
    proc = lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 kept, 0 broken" in proc.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "chalicelib", tmp_path / "chalicelib")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "chalicelib" / "domain" / "records.py").open("a") as f:
        f.write("\nfrom chalicelib.store.leases import LeaseRecords  # noqa: E402,F401\n")
    proc = lint(tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "chalicelib.domain.records -> chalicelib.store.leases" in proc.stdout
