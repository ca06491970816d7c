"""`chalice package` builds a deployable zip offline, with numpy inside it."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from crowdtrain.paths import ROOT


def test_package_contains_numpy_and_the_fold_event_source(tmp_path):
    chalice = Path(sys.executable).parent / "chalice"
    env = dict(os.environ, AWS_DEFAULT_REGION="us-east-1")
    proc = subprocess.run(
        [str(chalice), "package", "--stage", "dev", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    # chalice exits 0 even when it could not bundle a dependency: check for its warning too
    assert "Could not install dependencies" not in proc.stdout + proc.stderr
    archive = tmp_path / "out" / "deployment.zip"
    assert archive.stat().st_size < 50 * 1024 * 1024
    names = set(zipfile.ZipFile(archive).namelist())
    assert "numpy/__init__.py" in names and "app.py" in names and "chalicelib/fold/fold.py" in names
    assert any(n.startswith("numpy/_core/_multiarray_umath") and n.endswith(".so") for n in names)
    template = json.loads((tmp_path / "out" / "sam.json").read_text())
    events = template["Resources"]["Fold"]["Properties"]["Events"]
    [source] = events.values()
    assert source["Type"] == "SQS" and source["Properties"]["Queue"]["Fn::Sub"].endswith(":crowdtrain-dev-results.fifo")
    # the fold has concurrency of its own: an API flood cannot starve it (.chalice/config.json)
    assert template["Resources"]["Fold"]["Properties"]["ReservedConcurrentExecutions"] == 10
    # each Lambda has a role of its own (.chalice/policy-dev-<function>.json)
    roles = [
        r["Properties"]["Role"]["Fn::GetAtt"][0]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Serverless::Function"
    ]
    assert len(roles) == len(set(roles)) == 4


def test_packaged_template_passes_cfn_lint(tmp_path):
    env = dict(os.environ, AWS_DEFAULT_REGION="us-east-1")
    chalice = Path(sys.executable).parent / "chalice"
    subprocess.run(
        [str(chalice), "package", "--stage", "dev", str(tmp_path)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    lint = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--include-checks", "I", "--", str(tmp_path / "sam.json")],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
