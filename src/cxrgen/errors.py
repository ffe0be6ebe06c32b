"""The base of every error cxrgen raises for bad input: the CLI prints these as one line and exits non-zero."""


class CxrgenError(Exception):
    """Bad input or state that a user can fix; the message names the file, row, column or key."""
