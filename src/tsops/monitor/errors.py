"""What monitoring raises: input it cannot use, said with what to do about it."""

from __future__ import annotations

from tsops.core.errors import TsopsError


class MonitorError(TsopsError, ValueError):
    """Input that monitoring cannot use; the message says what was wrong and how to fix it."""


class ActualsError(MonitorError):
    """The actuals (the model's source, or --actuals) are not a long frame monitoring can
    score against; the message lists every problem."""

    headline = "the actuals are not a usable long frame"
