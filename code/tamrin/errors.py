"""User-facing errors: one clear line (what, why, what to do) and a non-zero exit, never a traceback."""


class TamrinError(Exception):
    """An error the user can act on. `str(err)` is the single line printed; `exit_code` is returned."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(TamrinError):
    """A bad key, type or value in the configuration."""


class MissingResultError(TamrinError):
    """A results file another stage must produce first."""
