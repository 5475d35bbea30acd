"""Errors that end a run with a one-line cause a person can act on."""


class RecsysError(Exception):
    """A failure whose message names what is wrong (file, row, setting, server) and why.

    The CLI prints it as one line and exits non-zero; Airflow shows it as the task's cause.
    """


class InputError(RecsysError):
    """Raw input is missing, unreadable or fails validation."""


class ConfigError(RecsysError):
    """A setting has a value the project cannot use."""


class DatabaseError(RecsysError):
    """The recommendation store is unreachable or refused an operation."""


class GateError(RecsysError):
    """The evaluation gate could not reach a decision."""
