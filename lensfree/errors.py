"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class LensfreeError(Exception):
    """Bad input or an impossible request, described so a user can act on it.

    The message names the file, frame or parameter at fault and, where it helps, what to do.
    """
