"""The method interface: a distillation method is a sum of named loss terms.

A *term* (`Term`) is a small `nn.Module` registered under a name (`ce`, `kd`, ...). A *method* is an
ordered set of terms (`kd+fa+at`, or a named variant in the grid file), built into one `Method`
module whose `losses()` returns every term's named losses in one dict; the trainer sums and logs
them. Terms may own trainable parts (e.g. a FitNet regressor): being sub-modules of the `Method`,
they are found by the optimizer and saved in checkpoints.

Methods see models only through the feature contract (harness/models): `model(x, features=True)` returns
`(logits, [stage features...])`, the last feature map being the Grad-CAM layer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from harness.data.device import Batch  # what a term receives: the augmented batch


class Outputs(NamedTuple):
    """What a model's `forward(x, features=True)` returns."""

    logits: Tensor
    features: list[Tensor]


@dataclass
class Context:
    """What a term is built with besides its own parameters."""

    student: nn.Module
    teachers: list[nn.Module] = field(default_factory=list)
    label_smoothing: float = 0.0
    shared: dict = field(default_factory=dict)  # one per method: lets its terms share per-step work
    # Per teacher, its outputs on the clean training split (methods.gradcam.CachedTeacher), built
    # by the harness when a term has the parameter teacher_cache = "clean"; None otherwise.
    teacher_caches: list | None = None
    teacher_names: list[str] = field(default_factory=list)  # the grid's teacher labels (for logs)


class Term(nn.Module):
    """One ingredient of a method. Subclasses set the class attributes and implement `losses`."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}  # every accepted parameter with its default
    choices: ClassVar[dict[str, tuple]] = {}  # the allowed values of parameters that are a choice
    uses_teachers: ClassVar[bool] = False
    supervises: ClassVar[bool] = False  # True: the term returns the student's own "ce" loss
    needs_teacher_features: ClassVar[bool] = False  # reads the teachers' feature maps

    @property
    def supplies_teacher_outputs(self) -> bool:
        """True where `teacher_outputs` replaces the teachers' forward: a term with the parameter
        `teacher_cache = "clean"` reads the teachers' logits on the clean images from the cache."""
        return self.params.get("teacher_cache") == "clean"

    def __init__(self, ctx: Context, **params: Any):
        super().__init__()
        self.params = {**self.defaults, **params}
        self._caches = ctx.teacher_caches  # a plain attribute: held, never saved
        self._n_teachers = len(ctx.teachers)

    def cache(self) -> list:
        """The teacher cache the harness handed over (one CachedTeacher per teacher)."""
        if self._caches is None or len(self._caches) != self._n_teachers:
            raise RuntimeError(f"{self.name}: teacher_cache = 'clean' but the harness handed no teacher cache "
                               "(build_trainer builds it; pass Context(teacher_caches=...) when building by hand)")
        return self._caches

    def losses(self, batch: Batch, student: Outputs, teachers: list[Outputs]) -> dict[str, Tensor]:
        raise NotImplementedError

    def teacher_outputs(self, batch: Batch) -> list[Outputs] | None:
        """The teachers' outputs when this term supplies them (the cached clean-view logits of the
        batch's images, no feature maps); None: the teachers run on the batch."""
        if not self.supplies_teacher_outputs:
            return None
        return [Outputs(c.logits[batch.indices], []) for c in self.cache()]

    def epoch_summary(self, probe: Batch) -> dict[str, float]:
        """Numbers to log in the epoch table (e.g. what a mask did), after each epoch. `probe` is a
        fixed batch of un-augmented training images. Terms that accumulate per step reset here."""
        return {}


TERMS: dict[str, type[Term]] = {}
VARIANTS: dict[str, dict[str, Any]] = {}  # built-in named variants: {"terms": [...], **options}


def register(cls: type[Term]) -> type[Term]:
    """Class decorator: make a term available to grid files under `cls.name`."""
    if cls.name in TERMS:
        raise ValueError(f"method term {cls.name!r} registered twice")
    TERMS[cls.name] = cls
    return cls


def register_variant(name: str, **table: Any) -> None:
    """A named method made of registered terms with options, listable in a grid like a term
    (a grid's own [methods.<name>] table with `terms` takes precedence)."""
    if name in VARIANTS or name in TERMS:
        raise ValueError(f"method {name!r} registered twice")
    VARIANTS[name] = table


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy in float32, whatever the autocast precision."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


class Method(nn.Module):
    """The terms of one method, summed by the trainer. Teachers are held, not owned: they are
    neither trained nor saved with the method."""

    def __init__(self, terms: list[Term], teachers: list[nn.Module]):
        super().__init__()
        check_composition(terms)
        self.terms = nn.ModuleList(terms)
        self.teachers = list(teachers)  # a plain list: not sub-modules, so never saved or optimised

    @property
    def uses_teachers(self) -> bool:
        return any(t.uses_teachers for t in self.terms)

    def teacher_outputs(self, batch: Batch) -> list[Outputs]:
        """Frozen teachers under inference mode, unless a term supplies their outputs. The outputs
        are cloned out of inference mode because autograd may save them for the student's backward."""
        if not self.uses_teachers:
            return []
        for term in self.terms:
            supplied = term.teacher_outputs(batch)
            if supplied is not None:
                return supplied
        with torch.inference_mode():
            outs = [teacher(batch.images, features=True) for teacher in self.teachers]
        return [Outputs(l.clone(), [f.clone() for f in fs]) for l, fs in outs]

    def epoch_summary(self, probe: Batch) -> dict[str, float]:
        summary: dict[str, float] = {}
        for term in self.terms:
            summary.update(term.epoch_summary(probe))
        return summary

    def losses(self, batch: Batch, student: Outputs, teachers: list[Outputs]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for term in self.terms:
            for name, value in term.losses(batch, student, teachers).items():
                if name in out:
                    raise ValueError(f"two terms of the method both return a loss named {name!r}")
                out[name] = value
        return out


def check_composition(terms: list[Term]) -> None:
    """Terms that cannot work together are refused when the method is built (which the grid does
    at plan time), not when a job meets them."""
    supervising = [t.name for t in terms if t.supervises]
    if len(supervising) > 1:
        raise ValueError(f"{' and '.join(supervising)} each supervise the student (each returns its own 'ce'); "
                         "compose at most one of them")
    suppliers = [t.name for t in terms if t.supplies_teacher_outputs]
    readers = [t.name for t in terms if t.needs_teacher_features]
    if suppliers and readers:
        raise ValueError(f"{suppliers[0]} supplies cached teacher outputs without feature maps, which "
                         f"{', '.join(readers)} need: set its teacher_cache = 'off'")


def build_method(spec: dict[str, Any], ctx: Context) -> Method:
    """Build from a resolved spec `{"terms": [...], "params": {term: {...}}}` (see `resolve`).
    A method with no supervising term gets plain cross-entropy added first."""
    names = list(spec["terms"])
    if not any(TERMS[n].supervises for n in names):
        names.insert(0, "ce")
    terms = [TERMS[n](ctx, **spec["params"].get(n, {})) for n in names]
    return Method(terms, ctx.teachers if any(t.uses_teachers for t in terms) else [])
