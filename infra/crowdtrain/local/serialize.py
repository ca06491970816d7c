"""Run a library's method under a lock: how the local cloud makes moto's
server and boto3's shared clients keep rules that AWS and Lambda keep for
them (moto_server.py, shared_clients.py)."""

from __future__ import annotations

import functools
import threading
from typing import Any


def one_at_a_time(owner: type, name: str, lock: threading.Lock | threading.RLock) -> None:
    """Make `owner.name` run under `lock` (idempotent: a second call leaves the first wrapper)."""
    method = getattr(owner, name)
    if getattr(method, "serialized", False):
        return

    @functools.wraps(method)
    def serialized(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    setattr(serialized, "serialized", True)  # the mark a second call looks for (functools' wrapper declares none)
    setattr(owner, name, serialized)
