"""Distillation methods. Every module of this package is imported here so that its `register`
calls run: a new method is a new file. The harness reaches them only through `TERMS`,
`build_method` and the types below."""
import importlib
import pkgutil

from methods.base import (TERMS, VARIANTS, Batch, Context, Method, Outputs, Param, Progress, Term, build_method,
                          register, register_variant)

__all__ = ["TERMS", "VARIANTS", "Batch", "Context", "Method", "Outputs", "Param", "Progress", "Term",
           "build_method", "discover", "register", "register_variant"]


def discover() -> None:
    """Import every module on the package's path (`__path__`, to which a test may add a folder);
    those imported already are not run again."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


discover()
