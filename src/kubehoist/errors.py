"""The one exception type the CLI turns into a one-line message and a non-zero exit.

Every expected failure (bad input, an unreachable API server, a failed build) is
raised as a `KubehoistError` whose message names the file or object and the field;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class KubehoistError(Exception):
    """An expected failure, reported as one line on stderr."""

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        """The message on one line: a line break or other control character that came in
        with the input (a flag, a file name) is shown escaped."""
        text = str(self.args[0]) if self.args else ""
        return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class UsageError(KubehoistError):
    """The command line itself is wrong (exit code 2, as click uses)."""

    exit_code = 2
