"""The framework's own error types: a user-facing message, never a deep torch trace."""


class ClipftError(Exception):
    """Base class: anything raised as a ClipftError is printed as one clear line by the CLIs.

    Library code names its own parameter (``image_size=0 ...``); whoever built the object from a
    config knows where it sits and adds that with :meth:`located` (``model.clip: image_size=0 ...``),
    so a message is right wherever the object is configured (``model.ensemble[1].clip``).
    """

    config_path: str | None = None

    def located(self, path: str) -> "ClipftError":
        """Prefix the config path of the object that raised (outermost call last); returns self."""
        message = super().__str__()
        full = f"{path}.{self.config_path}" if self.config_path else path
        if path and not message.startswith((f"{full}.", f"{full}=", f"{full}:", f"{full}[")):
            self.config_path = f"{path}.{self.config_path}" if self.config_path else path
        return self

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.config_path}: {message}" if self.config_path else message


class ConfigError(ClipftError, ValueError):
    """A configuration value is missing or invalid (names the key, the value and what is allowed)."""


class DataError(ClipftError, ValueError):
    """A dataset file or folder is missing, empty, unreadable or inconsistent (names the path and the fix)."""


class CheckpointError(ClipftError, ValueError):
    """A checkpoint cannot be used here (wrong kind, mismatched classes, unsafe contents)."""


class DiskFull(ClipftError, OSError):
    """No space left where a file was being written (names the folder and the bytes it needed)."""
