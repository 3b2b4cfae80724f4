"""Errors a user can cause. The CLI prints them as one line, never as a traceback."""


class UserError(Exception):
    """Bad input from the user (a path, a flag, a file). Printed as `error: <message>`."""


class ImageError(UserError):
    """An image that cannot be used. The message always starts with the file name."""
