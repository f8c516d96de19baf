"""The one exception type users see: a message that says what is wrong, where, and what to do."""


class FastsegError(Exception):
    """Bad input or state that the user can fix; the CLIs print it as one line and exit non-zero."""
