"""The one failure the conformance kit raises."""


class ConformanceError(AssertionError):
    """A component does not honour its interface. The message names the component, its plugin
    and the problem. An ``AssertionError``, so pytest reports it as a failed check, not a crash."""
