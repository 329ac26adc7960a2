"""Base class for component options: plain data, unknown keys rejected, no silent coercion that
changes meaning."""

import types
import typing

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _accepts(annotation, kind: type) -> bool:
    if annotation is kind:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        args = typing.get_args(annotation)
        return any(_accepts(a, kind) for a in (args[:1] if origin is typing.Annotated else args))
    return False


class Options(BaseModel):
    # allow_inf_nan: `alpha: .nan` or `temperature: 1e999` is a typo that only shows, if at all,
    # as a NaN loss mid-training; refused when the suite is read
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value, info: ValidationInfo):
        # pydantic reads true/false as 1/0 for a number: `alpha: false` quietly turned a KD loss
        # into its hard loss alone. A YAML yes/no/true/false for a number is refused instead.
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and not _accepts(annotation, bool) and (
                _accepts(annotation, int) or _accepts(annotation, float)):
            raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
        return value


class NoOptions(Options):
    """For components that take no options."""
