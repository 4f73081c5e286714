"""The one exception type for mistakes a user can fix (bad file, bad option, bad run).

The CLI turns it into a one-line message on stderr and exit code 2; anything else is an
internal error (exit 1).
"""


class UserError(Exception):
    """A problem with the user's input; the message says what to do about it."""
