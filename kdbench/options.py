"""Base class for component options: plain data, unknown keys rejected."""

from pydantic import BaseModel, ConfigDict


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(Options):
    """For components that take no options."""
