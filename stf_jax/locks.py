"""One writer per output directory: `DIR/.lock` holds the writer's pid, host and start time.

    with DirLock(out_dir, "extraction"):
        ...   # a second writer of out_dir is refused with LockedError (a UserError: one line, exit 2)

The lock file is created with O_EXCL. A lock left by a process that no longer exists (same host, pid gone
or reused by another process) is stale: it is taken over, with a note on stderr. A lock held from another
host cannot be checked from here; the message says how to remove it by hand.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import UserError

LOCK_NAME = ".lock"


class LockedError(UserError, RuntimeError):
    """Another process is writing the directory."""


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, ticks: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _start_ticks(pid)
    return ticks is None or now is None or now == ticks


class DirLock:
    def __init__(self, root: str | Path, what: str = "run"):
        self.root, self.what = Path(root), what
        self.path = self.root / LOCK_NAME
        self.held = False

    def _info(self) -> dict:
        pid = os.getpid()
        return {"pid": pid, "host": socket.gethostname(), "start_ticks": _start_ticks(pid),
                "since": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv)[:500], "what": self.what}

    def acquire(self) -> "DirLock":
        self.root.mkdir(parents=True, exist_ok=True)
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # being written right now, or garbage: look again shortly
                    time.sleep(0.05)
                    if self._holder() is None and self._age() > 5:
                        self._break("unreadable lock file")
                    continue
                if holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", -1)),
                                                                                holder.get("start_ticks")):
                    self._break(f"stale lock of pid {holder.get('pid')} (no longer running)")
                    continue
                raise LockedError(
                    f"{self.root} is being written by pid {holder.get('pid')} on {holder.get('host')} since "
                    f"{holder.get('since')} ({holder.get('what', 'run')}); wait for it to finish, or if that process "
                    f"is gone, delete {self.path}")
            with os.fdopen(fd, "w") as f:
                json.dump(self._info(), f)
            self.held = True
            return self
        raise LockedError(f"{self.path}: could not take the lock (it keeps changing); is another writer starting?")

    def _holder(self) -> dict | None:
        try:
            info = json.loads(self.path.read_text())
            return info if isinstance(info, dict) and "pid" in info else None
        except (OSError, ValueError):
            return None

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except OSError:
            return 0.0

    def _break(self, why: str) -> None:
        print(f"note: {self.path}: {why}; taking it over", file=sys.stderr)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if self.held:
            holder = self._holder()
            if holder is None or holder.get("pid") == os.getpid():
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
            self.held = False

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class CacheLock:
    """A waiting lock for a shared cache entry (a converted model, an assembled GGUF): a second process that
    needs the same entry blocks until the first has written it, then finds it done. `path` is the entry;
    the lock is `.locks/<name>.lock` in the cache's root (the entry's grandparent, so the cache folders hold
    only finished entries); fcntl.flock, released when the process dies."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = path.parent.parent / ".locks" / f"{path.parent.name}__{path.name}.lock"
        self._fh = None

    def __enter__(self) -> "CacheLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a")
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        import fcntl

        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
