"""Errors that mean "the user asked for something wrong" (exit code 2 on the command line).

Anything else that escapes is a runtime failure (exit code 1). Messages name the file, key or
name at fault and say what was expected.
"""


class UsageError(ValueError):
    """Bad input from the user: an unknown name, a missing file, a malformed config or checkpoint."""


class ConfigError(UsageError):
    """A config file or override that cannot be applied."""


class DownloadError(UsageError):
    """A checkpoint URL or zoo file that could not be fetched; the message names the URL and the cache path
    where a file fetched by hand can be placed (so it reads as one line at the command line, exit code 2)."""
