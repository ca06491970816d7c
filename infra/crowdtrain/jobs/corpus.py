"""The demo's training text: the King James Version of the Bible, public
domain (outside the UK's Crown patent), shipped by Debian's `bible-kjv`
package and read offline with its `bible` program. Nothing is downloaded."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np

TOKEN_DTYPE = "uint8"  # how batch files store token ids: character codes below 128, one byte each
INSTALL_HINT = "install Debian's bible-kjv package (apt-get install bible-kjv)"
HEADING = re.compile(r"^[1-3]?\s?[A-Z][A-Za-z ]+ \d+$")
VERSE = re.compile(r"^\s*\d+ ")


def kjv_text(passage: str = "gen1:1-rev22:21") -> str:
    """Plain text of a passage: headings and verse numbers removed, wrapped lines joined."""
    program = shutil.which("bible")
    if program is None:
        raise RuntimeError(f"the demo corpus needs the `bible` program: {INSTALL_HINT}")
    raw = subprocess.run([program, passage], capture_output=True, text=True, check=True, timeout=60).stdout
    verses: list[str] = []
    for line in raw.splitlines():
        if not line.strip() or HEADING.match(line.strip()):
            continue
        if VERSE.match(line):
            verses.append(VERSE.sub("", line, count=1).strip())
        elif verses:
            verses[-1] += " " + line.strip()
    return "\n".join(verses) + "\n"


def windows(text: str, count: int, batch_size: int, length: int, seed: int = 0) -> np.ndarray:
    """`count` batches of `batch_size` runs of `length` characters drawn from the text, as uint8 ids."""
    codes = np.frombuffer(text.encode("ascii", "ignore"), np.uint8)
    if len(codes) < length:
        raise ValueError(f"the text has {len(codes)} usable characters; a sequence needs {length}")
    starts = np.random.default_rng(seed).integers(0, len(codes) - length + 1, size=(count, batch_size))
    return codes[starts[..., None] + np.arange(length)]


def token_file(x: np.ndarray, y: np.ndarray) -> bytes:
    """One batch's file: the sequences' ids, then the targets' ids."""
    return x.astype(TOKEN_DTYPE).tobytes() + y.astype(TOKEN_DTYPE).tobytes()
