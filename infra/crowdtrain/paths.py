"""Where the checkout's parts are: the one home of ROOT."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
SITE = ROOT / "frontend" / "dist"
