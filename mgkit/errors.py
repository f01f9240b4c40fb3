"""Errors meant for people: one sentence naming the file, field or flag at fault."""


class MgkitError(Exception):
    """A failure caused by input or environment, reported without a traceback (exit code 1)."""


class UsageError(MgkitError):
    """A bad flag or flag combination (exit code 2)."""


class FormatError(MgkitError):
    """A data file, checkpoint or run directory that does not have the expected layout."""
