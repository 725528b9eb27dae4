"""Errors that reach the user.

`UserError` carries a one-line message that names the problem and the fix. It subclasses
`ValueError`, so library callers can catch either; the CLI prints it as one line and exits 2.
"""


class UserError(ValueError):
    """A problem with the user's input (model name, switch, image size, file, config value)."""


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
