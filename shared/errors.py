"""The project's errors: one base class, subclasses with typed fields and a message built in ``__init__``."""

from __future__ import annotations

# How much of a value an error message quotes: inputs can be megabytes long (a price of 100,000 digits),
# and the line that names one must stay a line.
EXCERPT_CHARS = 80


def excerpt(value: object, limit: int = EXCERPT_CHARS, *, quoted: bool = True) -> str:
    """Show ``value`` in an error message: a string quoted (unless ``quoted`` is false), anything else as text.

    Beyond ``limit`` characters only the first ``limit`` are shown, followed by ``...`` and the length.
    """
    text = value if isinstance(value, str) else str(value)
    cut = len(text) > limit
    shown = text[:limit] if cut else text
    if quoted and isinstance(value, str):
        shown = repr(shown)
    return f"{shown}... ({len(text):,} characters)" if cut else shown


class RRRError(Exception):
    """Base error of the project."""


class ConfigError(RRRError):
    """A configuration value is missing or malformed."""

    def __init__(self, source: str, expected: str, got: object) -> None:
        self.source = source
        self.expected = expected
        self.got = got
        shown = excerpt(got) if isinstance(got, str) else excerpt(repr(got), quoted=False)
        super().__init__(f"{source}: expected {expected}, got {shown}")


class InvalidSymbolError(RRRError, ValueError):
    """A symbol cannot be used as a subject token."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        super().__init__(
            f"invalid symbol {excerpt(symbol)}: expected 1-32 characters of A-Z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )


class InvalidSubjectError(RRRError):
    """A subject does not have the layout its family requires."""

    def __init__(self, subject: str, expected: str) -> None:
        self.subject = subject
        self.expected = expected
        super().__init__(f"invalid subject {excerpt(subject)}: expected {expected}")


class MisroutedMessageError(RRRError):
    """A message arrived on a subject that is not its own: of another family, symbol or shard."""

    def __init__(self, subject: str, expected: str, got: str) -> None:
        self.subject = subject
        self.expected = expected
        self.got = got
        super().__init__(f"misrouted message on {subject!r}: expected {expected}, got {got}")


class BadRowError(RRRError):
    """A row of a market-data file cannot be read."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}")


class MalformedMessageError(RRRError):
    """A payload could not be decoded as a message of the subject's family."""

    def __init__(self, subject: str, reason: str) -> None:
        self.subject = subject
        self.reason = reason
        super().__init__(f"malformed message on {subject!r}: {reason}")


class TransientError(RRRError):
    """A dependency is unavailable for now (database down, broker reconnecting): retry later, losing nothing.

    A batch failing with it is redelivered without counting towards dead-lettering.
    """


class FatalError(RRRError):
    """State can no longer be trusted to match the streams: the service must stop and rebuild on restart."""
