"""The error every layer raises for a problem the user can fix: the command line prints its
message in one line and exits with status 2, no traceback."""


class UserError(Exception):
    """A problem the user can fix (a bad setting, a missing or broken file)."""
