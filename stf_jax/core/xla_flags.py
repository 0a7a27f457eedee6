"""XLA:CPU settings for extraction, put in `XLA_FLAGS` by `python -m stf_jax.extract` before JAX starts its
CPU backend (which reads the variable once, for the whole process).

jaxlib 0.10 hands XLA:CPU's dots and the work around them to YNNPACK fusions by default. In stf_jax's
extraction forward, XLA's own dot emitter (Eigen's GEMM) ran 8 % faster end to end (smollm2-135m, 500
pairs, warm compilation cache, 2-core AVX-512 CPU: 1,073 and 1,056 tokens/s against 993 and 983, runs
interleaved). But KV-cache generation ran 13x slower without YNNPACK (gemma3-270m, 3 prompts x 32 tokens:
38.5 s against 3.0 s), so only the extraction command, which never generates, turns it off; importing
stf_jax leaves XLA_FLAGS alone. Only a jaxlib known to have the flag gets it (an unknown flag aborts XLA);
a user's own `ynn` setting wins; `STF_JAX_XLA_CPU_DEFAULTS=off` opts out. Results change only by float
rounding.
"""

from __future__ import annotations

import os
import re
from importlib import metadata

YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="
KNOWN = ((0, 10, 2), (0, 11, 0))  # jaxlib versions [from, to) whose XLA has the flag (0.10.2 measured)


def _jaxlib_version() -> tuple[int, ...] | None:
    try:
        found = re.match(r"(\d+)\.(\d+)\.(\d+)", metadata.version("jaxlib"))
    except metadata.PackageNotFoundError:
        return None
    return tuple(int(x) for x in found.groups()) if found else None


def cpu_defaults() -> str | None:
    """Add stf_jax's XLA:CPU flags to XLA_FLAGS for this process, where they apply; -> the flag added, or None."""
    if os.environ.get("STF_JAX_XLA_CPU_DEFAULTS", "").lower() in ("off", "0", "false", "none"):
        return None
    flags = os.environ.get("XLA_FLAGS", "")
    version = _jaxlib_version()
    if "ynn_fusion_type" in flags or version is None or not KNOWN[0] <= version < KNOWN[1]:
        return None
    os.environ["XLA_FLAGS"] = f"{flags} {YNN_OFF}".strip()
    return YNN_OFF
