"""Errors that carry a message meant for the user.

Anything raised as a `QtappError` is shown as is (by the CLI on stderr, by the GUI in a dialog);
any other exception is a bug and is shown with its traceback.
"""


class QtappError(Exception):
    """A failure the user can act on; the message says what went wrong and what to do."""


class UsageError(QtappError):
    """Bad input from the user: an unknown option value, layer name, recipe key or shape."""


class Cancelled(QtappError):
    """A long job was cancelled by the user before it finished."""

    def __init__(self, message: str = "cancelled by the user") -> None:
        super().__init__(message)
