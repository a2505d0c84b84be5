"""Distillation methods. Each module registers its terms; the harness reaches them only through
`TERMS`, `build_method` and the types below."""
from methods.base import TERMS, Batch, Context, Method, Outputs, Term, build_method, register
from methods import ce, kd  # noqa: F401  (registration)

__all__ = ["TERMS", "Batch", "Context", "Method", "Outputs", "Term", "build_method", "register"]
