"""The one error type a user sees: a single line naming what is wrong and where."""


class SlimlineError(Exception):
    """Bad input or an impossible request; the stage runner prints it as one line and exits 2."""
