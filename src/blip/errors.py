"""Errors a user can cause; the command line prints them as one line and exits non-zero."""


class BlipError(Exception):
    """Base class for every error caused by input (files, arguments, checkpoints), not by a bug."""


class ImageError(BlipError):
    """An image that cannot be used; `reason` is a short tag for counting skipped samples."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class CheckpointError(BlipError):
    """A checkpoint that is missing, truncated, of the wrong kind or incompatible."""
