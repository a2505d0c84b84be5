"""Distillation methods. Each module registers its terms; the harness reaches them only through
`TERMS`, `build_method` and the types below."""
from methods.base import (TERMS, VARIANTS, Batch, Context, Method, Outputs, Term, build_method, register,
                          register_variant)
from methods import ce, kd, fa, at, causal_mask  # noqa: F401  (registration)
from methods import mate  # noqa: F401  (registration)

__all__ = ["TERMS", "VARIANTS", "Batch", "Context", "Method", "Outputs", "Term", "build_method", "register",
           "register_variant"]
