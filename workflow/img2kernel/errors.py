"""Errors that name what the user wrote wrong (kept apart so every module can raise them cheaply)."""


class FilterSpecError(ValueError):
    """A filter entry is valid by schema but not as a filter; ``field`` names the culprit."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
