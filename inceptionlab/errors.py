"""Errors that reach the user.

`UserError` carries a one-line message that names the problem and the fix. It subclasses
`ValueError`, so library callers can catch either; the CLI prints it as one line and exits 2.
"""
import re


class UserError(ValueError):
    """A problem with the user's input (model name, switch, image size, file, config value)."""


class FixInPython(UserError):
    """A UserError whose fix is a Python call; ``command_line`` is the message with the command line's fix."""

    def __init__(self, message: str, command_line: str) -> None:
        super().__init__(message)
        self.command_line = command_line


# an API fix naming create_model's arguments: on the command line, --model and --model-kwargs
_CREATE_MODEL_FIX = re.compile(r"create_model\('([\w.]+)'((?:, \w+=[^,()]+)*), weights=\.\.\.\)( \(or --model \1\))?")


def command_line_message(error: UserError, classes_from_data: bool = False) -> str:
    """``error``'s message with the command line's fix where the API's is a Python call.
    ``classes_from_data``: the command takes the class count from its data (train, the lab), which
    refuses a num_classes among the flags, so the fix leaves it out."""
    message = getattr(error, "command_line", None) or str(error)

    def flags(found: re.Match) -> str:
        kwargs = [arg.strip() for arg in found[2].split(",") if arg.strip()]
        if classes_from_data:
            kwargs = [arg for arg in kwargs if not arg.startswith("num_classes=")]
        return f"--model {found[1]}" + (f" --model-kwargs {' '.join(kwargs)}" if kwargs else "")
    return _CREATE_MODEL_FIX.sub(flags, message)


def listed(names, limit: int = 5) -> str:
    """The first ``limit`` names joined for a message, with how many more there are."""
    names = list(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def clipped(reason: str, limit: int = 160) -> str:
    """A library's error text for the middle of our one line: its first sentence when that is short
    enough, else cut at a word boundary with "...", where a cut at ``limit`` characters ended mid-word."""
    text = " ".join(str(reason).split())
    end = text.find(". ")
    if 0 < end < limit:
        return text[:end]
    if len(text) <= limit:
        return text.rstrip(".")
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "..."


def closest(name: str, choices, n: int = 3) -> str:
    """', '.join of the choices closest to `name`, for 'did you mean' hints."""
    import difflib

    # (a YAML key such as 1 is an int: difflib needs strings)
    hits = difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=0.5)
    return ", ".join(hits)
