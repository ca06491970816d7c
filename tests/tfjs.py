"""Run TF.js under Node (tests/js/tfjs_oracle.cjs) as a reference implementation."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from crowdtrain.paths import ROOT

ORACLE = ROOT / "tests" / "js" / "tfjs_oracle.cjs"
NODE_MODULES = ROOT / "frontend" / "node_modules"


def tfjs(command: str, *args: str, payload: Any = None, timeout: float = 120) -> Any:
    """Run one oracle command; its JSON answer is the last line of stdout."""
    if not (NODE_MODULES / "@tensorflow" / "tfjs").is_dir():
        raise RuntimeError("frontend/node_modules is missing: run `make install` (npm ci in frontend/)")
    env = dict(os.environ, NODE_PATH=str(NODE_MODULES))
    proc = subprocess.run(
        ["node", str(ORACLE), command, *args],
        input=json.dumps(payload) if payload is not None else "",
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"tfjs_oracle {command} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
