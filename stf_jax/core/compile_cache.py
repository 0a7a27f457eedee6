"""Compile once per machine: JAX's persistent compilation cache, on for every command.

XLA compiles each program shape once per process; a command run again (a resumed extraction, the same
alignment on new data of the same size) would compile everything again. Every `python -m stf_jax.*`
command (`errors.cli_main`) therefore points JAX's persistent cache at `$STF_JAX_CACHE/xla` (default
`~/.cache/stf_jax/xla`) before JAX is imported, through JAX's own environment settings, so the floor does
not import JAX. JAX writes cache entries atomically, so two processes may share the directory.

    STF_JAX_COMPILE_CACHE=off        no persistent cache
    STF_JAX_COMPILE_CACHE=/some/dir  another directory
    JAX_COMPILATION_CACHE_DIR=...    JAX's own setting wins if the user has set it

From Python, `stf_jax.core.compile_cache.enable()` does the same for the current process (before or after
JAX is imported).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

MIN_COMPILE_SECONDS = 0.2  # programs that compile faster are not worth a disk read


def cache_path() -> Path | None:
    """The cache directory the settings name, or None when it is off."""
    choice = os.environ.get("STF_JAX_COMPILE_CACHE", "")
    if choice.lower() in ("off", "0", "none", "false"):
        return None
    if choice:
        return Path(choice)
    return Path(os.environ.get("STF_JAX_CACHE", Path.home() / ".cache" / "stf_jax")) / "xla"


def enable() -> Path | None:
    """Turn the persistent compilation cache on for this process (unless the user chose a directory or off)."""
    path = cache_path()
    if path is None or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    settings = {"jax_compilation_cache_dir": str(path),
                "jax_persistent_cache_min_compile_time_secs": MIN_COMPILE_SECONDS,
                "jax_persistent_cache_min_entry_size_bytes": 0}
    if "jax" in sys.modules:  # already imported: its config is live
        import jax

        for key, value in settings.items():
            jax.config.update(key, value)
    else:  # read by JAX when it is imported
        for key, value in settings.items():
            os.environ.setdefault(key.upper(), str(value))
    return path
