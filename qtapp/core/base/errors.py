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


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's text, for one-line messages (torch's messages often
    start with a newline or run to dozens of lines)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0][:limit] if lines else "(no message)"


class CodeConsentRequired(QtappError):
    """A file (a recipe) names Python code to run: it runs only with the user's consent (--trust, or
    the window's dialog). What the user typed as the model spec is consent; what a file says is not."""

    def __init__(self, spec: str, source, role: str = "model") -> None:
        self.spec, self.source, self.role = spec, source, role
        yourself = {"model": "give the model yourself as SPEC", "metric": "give it yourself with --metric"}.get(
            role, "give them yourself as SPEC and --metric")
        spec_word = "callables" if " and " in role else "callable"
        super().__init__(
            f"{source} names the Python {spec_word} {spec} as its {role}; running it executes code from outside "
            "this app (a recipe is data, and may come from anyone). If you trust the recipe, pass --trust; "
            f"or {yourself} on the command line.")


class ProgramFileRefused(QtappError):
    """A model file is a program: TorchScript and lite-interpreter (.ptl) files carry code (their
    `__setstate__` runs when they are loaded, their methods when they are run) that can write any file
    the user can. Loading one needs the user's consent (--trust, or the window's dialog), as a pickle
    outside the allowlist does."""

    def __init__(self, path, kind: str = "TorchScript", message: str | None = None) -> None:
        self.path, self.kind = path, kind
        super().__init__(message or (
            f"{path} is a {kind} file: it is a program, and loading it runs code from the file (its __setstate__ "
            "and methods can create or overwrite files). If you trust the file, pass --trust; otherwise open "
            "the Python model (torchvision:NAME, package.module:callable, file.py:callable) with its state_dict."))
