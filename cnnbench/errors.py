"""User-facing errors: one line, no traceback."""


class CnnbenchError(Exception):
    """A mistake in the user's input or environment, reported as a single line.

    The CLI catches it, prints ``error: <message>`` and exits with code 2.
    """
