"""Errors that mean "the user asked for something wrong" (exit code 2 on the command line).

Anything else that escapes is a runtime failure (exit code 1). Messages name the file, key or
name at fault and say what was expected.
"""


class UsageError(ValueError):
    """Bad input from the user: an unknown name, a missing file, a malformed config or checkpoint."""


class ConfigError(UsageError):
    """A config file or override that cannot be applied."""
