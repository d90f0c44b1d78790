"""The library's own exceptions.

Library code raises these; only the CLI turns them into click errors. The split follows
the exit codes the CLI documents: a `UsageError` (exit 2) means the user asked for
something that cannot work and must change the command, config or seed; any other
`TextgenError` (exit 1) means the work itself failed (an unreadable corpus, a broken model
file) and the message says what to fix.
"""


class TextgenError(Exception):
    """A runtime failure with a one-line message that names the problem and the fix."""


class UsageError(TextgenError):
    """The request itself is wrong: a bad config value, flag combination or seed."""


class ConfigError(UsageError):
    """A config file or --set override has an unknown key, a wrong type or a bad value."""


class CorpusError(TextgenError):
    """A corpus path is missing, empty, not text, or not decodable."""


class ModelFileError(TextgenError):
    """A model path is missing, not a .keras file, corrupt, or not a textgen model."""
