"""Errors that the CLI reports as one line (exit code 2) instead of a traceback."""


class UserError(Exception):
    """Bad input from the user: a file, a flag or a setting. The message is the whole report."""
