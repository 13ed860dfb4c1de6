"""The framework's own error types: a user-facing message, never a deep torch trace."""


class ClipftError(Exception):
    """Base class: anything raised as a ClipftError is printed as one clear line by the CLIs."""


class ConfigError(ClipftError, ValueError):
    """A configuration value is missing or invalid (names the key, the value and what is allowed)."""


class DataError(ClipftError, ValueError):
    """A dataset file or folder is missing, empty, unreadable or inconsistent (names the path and the fix)."""


class CheckpointError(ClipftError, ValueError):
    """A checkpoint cannot be used here (wrong kind, mismatched classes, unsafe contents)."""


class DiskFull(ClipftError, OSError):
    """No space left where a file was being written (names the folder and the bytes it needed)."""
