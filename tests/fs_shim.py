"""A file-system shim for tests: make one kind of file operation under one directory
fail with a chosen errno, from its Nth call on (a full disk stays full).

It wraps `os.open`, `os.write`, `os.read`, `os.fsync`, `os.replace` and `os.close` for the
whole process, but only operations on paths under `root` (or on descriptors opened there
through `os.open`) can fail; everything else (sockets, pytest's own files) passes through.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_REAL = {name: getattr(os, name) for name in ("open", "write", "read", "fsync", "replace", "close")}


@dataclass(frozen=True, slots=True)
class Rule:
    op: str  # "open", "write", "read", "fsync" or "replace"
    pattern: str  # regex searched in the path relative to the root ("." is the root itself)
    errno: int
    after: int  # matching calls that still succeed before the first failure
    short: bool = False  # the first failing write writes half its bytes instead (a torn line)


class FaultyDisk:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
        self.root = os.path.realpath(root)
        self.rule: Rule | None = None
        self.calls = 0  # matching calls seen since `arm`
        self.failed = 0
        self._fds: dict[int, str] = {}
        self._lock = threading.RLock()  # os.close may run from a finalizer
        monkeypatch.setattr(os, "open", self._open)
        monkeypatch.setattr(os, "write", self._on_fd("write"))
        monkeypatch.setattr(os, "read", self._on_fd("read"))
        monkeypatch.setattr(os, "fsync", self._on_fd("fsync"))
        monkeypatch.setattr(os, "replace", self._replace)
        monkeypatch.setattr(os, "close", self._close)

    def arm(
        self, op: str, pattern: str, errno: int, *, after: int = 0, short: bool = False
    ) -> None:
        with self._lock:
            self.rule = Rule(op, pattern, errno, after, short)
            self.calls = self.failed = 0

    def disarm(self) -> None:
        with self._lock:
            self.rule = None

    def _relative(self, path: Any) -> str | None:
        try:
            full = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return None
        if full == self.root:
            return "."
        if full.startswith(self.root + os.sep):
            return full[len(self.root) + 1 :]
        return None

    def _check(self, op: str, relative: str | None) -> bool:
        """Raise the rule's error for a matching call past `after`; True instead for the
        first such write of a `short` rule (the caller writes half its bytes)."""
        if relative is None:
            return False
        with self._lock:
            rule = self.rule
            if rule is None or rule.op != op or not re.search(rule.pattern, relative):
                return False
            self.calls += 1
            if self.calls <= rule.after:
                return False
            self.failed += 1
            if rule.short and self.failed == 1:
                return True
        raise OSError(rule.errno, os.strerror(rule.errno), os.path.join(self.root, relative))

    def _open(self, path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        relative = self._relative(path) if kwargs.get("dir_fd") is None else None
        self._check("open", relative)
        fd: int = _REAL["open"](path, flags, mode, **kwargs)
        if relative is not None:
            with self._lock:
                self._fds[fd] = relative
        return fd

    def _on_fd(self, op: str) -> Any:
        real = _REAL[op]

        def wrapped(fd: int, *args: Any) -> Any:
            if self._check(op, self._fds.get(fd)):
                data = args[0]
                return real(fd, data[: max(1, len(data) // 2)])
            return real(fd, *args)

        return wrapped

    def _replace(self, src: Any, dst: Any, **kwargs: Any) -> None:
        self._check("replace", self._relative(src))
        _REAL["replace"](src, dst, **kwargs)

    def _close(self, fd: int) -> None:
        with self._lock:
            self._fds.pop(fd, None)
        _REAL["close"](fd)
