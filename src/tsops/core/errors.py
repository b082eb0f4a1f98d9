"""One error policy for every ``tsops`` command.

Every failure tsops can explain is a ``TsopsError``: its message says what was wrong
and how to fix it, and its ``exit_code`` tells a workflow what kind of failure it was.
Each command carries ``@reports_errors``, which turns these into one red line on stderr
and that exit code; anything else is a bug and keeps its traceback.

Exit codes (0 is success; 2 is typer's usage error, e.g. an unknown option, and
``tsops manifests validate``'s "nothing could be validated"):

==== =====================================================================
1    the input, configuration or state was wrong; fix it and run again
3    a verdict asks for action (``tsops monitor canary``: roll back)
4    a monitor alert fired (``tsops monitor drift`` / ``staleness``)
69   a service (registry, Dask scheduler, database) could not be reached;
     running again later may succeed (``EX_UNAVAILABLE`` of BSD's sysexits.h,
     so it cannot be mistaken for a verdict or an alert)
==== =====================================================================
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

#: a monitor verdict that asks for a rollback (``tsops monitor canary``)
ROLLBACK_EXIT = 3
#: a monitor alert fired (drift or staleness over its threshold)
ALERT_EXIT = 4
#: a service could not be reached
UNAVAILABLE_EXIT = 69


class TsopsError(Exception):
    """A failure tsops can explain; the message says what was wrong and how to fix it."""

    exit_code: ClassVar[int] = 1
    #: said before the message, e.g. what the command did not do because of it
    headline: ClassVar[str | None] = None

    def report(self) -> str:
        message = str(self)
        return f"{self.headline}:\n{message}" if self.headline else message


class UnavailableError(TsopsError):
    """A service tsops needs (registry, scheduler, database) did not answer."""

    exit_code = UNAVAILABLE_EXIT


F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(fn: F) -> F:
    """Known failures become one readable message and their exit code, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import typer

        try:
            return fn(*args, **kwargs)
        except TsopsError as exc:
            fail(exc.report(), exc.exit_code)
        except FileNotFoundError as exc:
            # an input that is not there names itself; the commands' messages say which
            # command writes it
            fail(str(exc))
        except typer.Exit:
            raise

    return wrapper  # type: ignore[return-value]


def fail(message: str, code: int = 1) -> None:
    """Print ``error: message`` in red on stderr and exit with ``code``."""
    import typer

    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)
