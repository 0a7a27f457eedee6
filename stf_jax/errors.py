"""Expected errors and how command lines report them.

Library errors speak the library's language: they name arguments as a call writes them (`layer=`), and
the command lines show them as flags (`--layer`, see `cli_message`).

An *expected* error is one a user can fix: a bad argument, a missing or malformed file, runs that do not
belong together. Its message says what is wrong, where (file, line, argument, layer) and how to fix it,
in one line. Every error class of the package that means "your input" derives from `UserError`;
`cli_main` turns them into that one line on stderr and exit code 2. Anything else is a bug and keeps its
traceback. `--debug` (or `STF_JAX_DEBUG=1`) shows the traceback of expected errors too.

    from stf_jax.errors import UserError, cli_main

    def main(argv=None) -> int: ...
    if __name__ == "__main__":
        cli_main(main)
"""

from __future__ import annotations

import os
import re
import sys
from typing import Callable, Sequence


class UserError(Exception):
    """An error in what the user gave (arguments, files, data): reported as one line, exit code 2."""


class SteeringInputError(UserError, ValueError):
    """A steering vector, control-vector file or steering setting that cannot be used as given (reported in one line)."""


EXIT_USER_ERROR = 2
# OS conditions on a path the user named: theirs to fix (free space, permissions, another path), not bugs
_USER_ERRNOS = {"EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "EEXIST", "EISDIR", "ENOTDIR", "ENOENT",
                "ENAMETOOLONG", "ELOOP", "EFBIG"}


def os_problem(exc: BaseException) -> str | None:
    """'PATH: what the system said; how to fix' for an OSError on a named path that the user can fix
    (read-only, no space, permission, exists, is a directory, ...), else None."""
    import errno

    if not isinstance(exc, OSError) or exc.errno is None or not exc.filename:
        return None
    name = errno.errorcode.get(exc.errno, "")
    if name not in _USER_ERRNOS:
        return None
    hint = {"EROFS": "write to another directory", "ENOSPC": "free some space or write elsewhere",
            "EDQUOT": "free some space or write elsewhere", "EACCES": "check its permissions",
            "EPERM": "check its permissions", "EEXIST": "choose another path",
            "EISDIR": "give a file path, not a directory", "ENOTDIR": "a part of the path is a file, not a directory",
            "ENOENT": "check the path", "ENAMETOOLONG": "use a shorter path", "ELOOP": "check the symlinks",
            "EFBIG": "write elsewhere"}[name]
    return f"{exc.filename}: {exc.strerror or name}; {hint}"


def debug_enabled(argv: Sequence[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("STF_JAX_DEBUG", "") not in ("", "0")


_ARGUMENT = re.compile(r"(?<![\w.-])([a-z][a-z0-9_]*)=(?=[\s),;:]|$)")


def cli_message(text: str) -> str:
    """A library message as a command line shows it. Library errors name Python arguments the way a call
    writes them, `layer=`; every command's flag for an argument is the argument's name with dashes
    (`--layer`, `--test-fraction`), so the translation is one rule: `name=` -> `--name`."""
    return _ARGUMENT.sub(lambda m: "--" + m.group(1).replace("_", "-"), text)


def one_line(exc: BaseException) -> str:
    """The message on one line (multi-line messages are joined with ' | '), as a command line shows it."""
    text = str(exc).strip() or type(exc).__name__
    return cli_message(" | ".join(line.strip() for line in text.splitlines() if line.strip()))


def yaml_problem(exc: BaseException) -> str:
    """A YAML parse error as 'line L, column C: problem' (PyYAML's own message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def report_user_error(exc: BaseException) -> int:
    """For a main() that catches its expected errors itself (so a direct call returns the exit code):
    print the one line and return 2, or re-raise under --debug / STF_JAX_DEBUG=1. Call inside `except`."""
    if debug_enabled():
        raise exc
    print(f"error: {os_problem(exc) or one_line(exc)}", file=sys.stderr)
    return EXIT_USER_ERROR


def cli_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run main(argv) and exit with its code; a UserError prints `error: ...` and exits 2.

    `--debug` is removed from argv before main sees it (every command accepts it)."""
    from .core.compile_cache import enable

    enable()  # compile once per machine: JAX's persistent cache (core.compile_cache), before JAX is imported
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(argv)
    argv = [a for a in argv if a != "--debug"]
    try:
        code = main(argv)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except OSError as exc:  # read-only, no space, permission ... on a path the user named: one line too
        problem = os_problem(exc)
        if debug or problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
