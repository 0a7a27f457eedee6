"""File names from data, and paths that stay inside an output directory.

Names that come from data (traits, model names, method and condition names) become file-name
components through `safe_name`, and every path a stage writes can be checked with `inside`.

Policy of `safe_name` (slug, never refuse a non-empty name): a name that is already safe is returned
unchanged, so ordinary names (`formality`, `smollm2-135m`, `layer-6`) keep their files' names. Any other
name is slugged *and* suffixed with 8 hex digits of its SHA-256, so two different unsafe names never
share a file (`"../../x"` -> `x-1b4f0e98`, `"emotional tone"` -> `emotional_tone-0c8d3e1f`). A safe name
is 1-128 characters from `[A-Za-z0-9._-]` that starts with a letter or digit: no separators, no control
characters, never `.` or `..`, never hidden. An empty (or whitespace-only) name is refused
(`UnsafeNameError`): there is nothing to name the file after.

    from stf_jax.safe_paths import inside, safe_name

    path = inside(out_dir, Path(safe_name(model)) / f"{safe_name(trait)}.gguf")   # refuses ../ and symlinks out
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .errors import UserError

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")


class UnsafeNameError(UserError, ValueError):
    """A data-derived name that cannot name a file (empty)."""


class UnsafePathError(UserError, ValueError):
    """A path that would land outside the output directory it belongs to."""


def is_safe_name(text: str) -> bool:
    """Whether `text` can be used as one file-name component as it is."""
    return isinstance(text, str) and bool(_SAFE.fullmatch(text))


def safe_name(text: str, what: str = "name") -> str:
    """`text` itself if safe, else a slug of it + '-' + 8 hex digits of its SHA-256 (see the module doc).

    Raises UnsafeNameError for a non-string, empty or whitespace-only name (`what` names it in the message)."""
    if not isinstance(text, str) or not text.strip():
        raise UnsafeNameError(f"{what} {text!r} cannot name a file: it is empty; give it a non-empty name")
    if is_safe_name(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    slug = _UNSAFE_RUN.sub("_", text).strip("._-")[:96] or "x"
    return f"{slug}-{digest}"


def inside(root: str | Path, path: str | Path) -> Path:
    """`root / path` (or `path` if absolute), after checking that it resolves inside `root`.

    Both are resolved (symlinks followed, `..` collapsed; neither needs to exist), so `../x`, an absolute
    path elsewhere and a symlink pointing out of `root` are refused with UnsafePathError. Returns the
    joined path as given (not the resolved one), so relative paths stay relative."""
    root = Path(root)
    joined = root / path
    real_root = root.resolve()
    real = joined.resolve()
    if real != real_root and not real.is_relative_to(real_root):
        raise UnsafePathError(f"{path}: would be written outside {root} (resolves to {real}); "
                              "a name from the data contains a path separator or '..'")
    return joined
