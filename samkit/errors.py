"""Errors samkit raises for user mistakes: the message says what was wrong and what to do."""


class SamkitError(ValueError):
    """A user-facing error (bad argument, missing data, corrupt file).

    The CLI prints its message without a traceback.
    """


class SamkitWarning(UserWarning):
    """A user-facing warning (a setting that runs but likely not as meant); the CLI prints it as
    ``warning: <message>``."""
