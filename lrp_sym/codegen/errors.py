"""The generator's error type."""


class CodegenError(Exception):
    """A derivation that cannot become a kernel: non-separable q, unknown function, bad name."""
