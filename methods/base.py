"""The method interface: a distillation method is a sum of named loss terms.

A *term* (`Term`) is a small `nn.Module` in a module of this package, made available to grid files
under its `name` by `@register` (every module of the package is imported at start-up, see
methods/__init__.py: a new file is all it takes). A term declares

- `defaults`: every parameter with its default, a plain value or `Param(default, choices=...,
  minimum=..., above=..., maximum=...)`. The grid validates grid files against this declaration
  (naming the key, the value and what is allowed); a term built by hand is checked against it too;
- `uses_teachers` and `supervises`, the two flags the harness branches on (see `Term`); a third
  capability, `cached`, is the term's parameter `teacher_cache` (declared as `TEACHER_CACHE`) set to
  "clean";

and implements `losses(batch, student, teachers) -> {name: loss}`, reading its parameters from
`self.params` and where training is from `self.progress` (`Progress`, set by the trainer before
each step), e.g. a warm-up: `weight * min(1, self.progress.epoch_float / warmup_epochs)`.
`epoch_summary` may add numbers to the epoch table.

A *method* is an ordered set of terms (`kd+fa+at`, a variant registered with `register_variant`,
or a grid's `[methods.<name>]` table), built into one `Method` module whose `losses()` returns every
term's named losses in one dict; the trainer sums and logs them. A method none of whose terms
supervises gets `ce` added. Terms may own trainable parts (e.g. a FitNet regressor): being
sub-modules of the `Method`, they are found by the optimizer and saved in checkpoints.

Methods see models only through the feature contract (harness/models): `model(x, features=True)` returns
`(logits, [stage features...])`, the last feature map being the Grad-CAM layer.
"""
from __future__ import annotations

import operator
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


@dataclass(frozen=True)
class Progress:
    """Where training is, set on the method by the trainer before each step (`Method.progress`)."""

    epoch: int = 0  # the current epoch, from 0
    step: int = 0  # the step within it, from 0
    steps_per_epoch: int = 1
    epochs: int = 1  # of the whole run

    @property
    def epoch_float(self) -> float:
        """Epochs done, fractional: 0 at the first step of the run."""
        return self.epoch + self.step / self.steps_per_epoch


@dataclass(frozen=True)
class Param:
    """A term parameter declared with what it allows; its type is that of the default."""

    default: Any
    choices: tuple = ()
    minimum: float | None = None  # value ≥ minimum
    above: float | None = None  # value > above
    maximum: float | None = None  # value ≤ maximum
    # False for a parameter added to a term that already has results: at its default it is left out
    # of the job key, so those results keep their keys (and stay completed)
    keyed_at_default: bool = True

    def problem(self, value: Any) -> str | None:
        """What the declaration says against `value`, or None (types are left to the grid)."""
        if self.choices and value not in self.choices:
            return f"allowed: {', '.join(map(repr, self.choices))}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        for bound, ok, text in ((self.minimum, operator.ge, "≥"), (self.above, operator.gt, ">"),
                                (self.maximum, operator.le, "≤")):
            if bound is not None and not ok(value, bound):
                return f"must be {text} {bound}"
        return None


TEACHER_CACHE = Param("off", choices=("off", "clean"))  # declared as `teacher_cache`, makes a term `cached`


class Term(nn.Module):
    """One ingredient of a method. Subclasses set `name` (and `defaults`, the flags) and implement `losses`."""

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}  # declared: values or Params; once the class exists: the values
    parameters: ClassVar[dict[str, Param]] = {}  # the declaration, made from `defaults` (grid validation reads it)
    uses_teachers: ClassVar[bool] = False  # the grid gives the method teacher sets; the trainer runs them
    supervises: ClassVar[bool] = False  # returns the student's own "ce" loss; else the method gets `ce`
    progress: Progress = Progress()  # set by the trainer before each step

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if "defaults" in cls.__dict__:  # the subclass's own declaration (an inherited one is split already)
            cls.parameters = {k: v if isinstance(v, Param) else Param(v) for k, v in cls.defaults.items()}
            cls.defaults = {k: p.default for k, p in cls.parameters.items()}

    def __init__(self, ctx: Context, **params: Any):
        super().__init__()
        self.params = {**self.defaults, **params}
        self.check(ctx)
        self._caches = ctx.teacher_caches  # a plain attribute: held, never saved
        self._n_teachers = len(ctx.teachers)
        self.label_smoothing = ctx.label_smoothing  # for a term's own CE (cross_entropy)

    def check(self, ctx: Context) -> None:
        """The declaration, for terms built by hand (the grid has checked a grid's before)."""
        for key, value in self.params.items():
            problem = self.parameters[key].problem(value) if key in self.parameters else None
            if problem:
                raise ValueError(f"{self.name}: {key} = {value!r}: {problem}")
        if self.uses_teachers and not ctx.teachers:
            raise ValueError(f"{self.name} needs at least one teacher")

    @property
    def cached(self) -> bool:
        """`teacher_cache = "clean"`: the teachers' logits of the clean images come from the harness's
        cache (`cache()`) and replace the teachers' forward for the whole method."""
        return self.params.get("teacher_cache") == "clean"

    def cache(self) -> list:
        """The teacher cache the harness handed over (one CachedTeacher per teacher)."""
        if self._caches is None or len(self._caches) != self._n_teachers:
            raise RuntimeError(f"{self.name}: teacher_cache = 'clean' but the harness handed no teacher cache "
                               "(build_trainer builds it; pass Context(teacher_caches=...) when building by hand)")
        return self._caches

    def losses(self, batch: Batch, student: Outputs, teachers: list[Outputs]) -> dict[str, Tensor]:
        raise NotImplementedError

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

    @property
    def progress(self) -> Progress:
        return self.terms[0].progress

    @progress.setter
    def progress(self, value: Progress) -> None:
        for term in self.terms:  # each term reads it as `self.progress`
            term.progress = value

    def teacher_outputs(self, batch: Batch) -> list[Outputs]:
        """Frozen teachers under inference mode, or a cached term's cache (the clean view's logits of
        the batch's images, no feature maps). The outputs are cloned out of inference mode because
        autograd may save them for the student's backward."""
        if not self.uses_teachers:
            return []
        cached = next((t for t in self.terms if t.cached), None)
        if cached is not None:
            return [Outputs(c.logits[batch.indices], []) for c in cached.cache()]
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
    cached = [t.name for t in terms if t.cached]
    others = [t.name for t in terms if t.uses_teachers and not t.cached]
    if cached and others:  # the cache replaces the teachers' forward for every term
        raise ValueError(f"{cached[0]} supplies cached teacher outputs without feature maps (the clean view's "
                         f"logits), which {', '.join(others)} would get instead of the teachers' own: "
                         "set its teacher_cache = 'off'")


def build_method(spec: dict[str, Any], ctx: Context) -> Method:
    """Build from a resolved spec `{"terms": [...], "params": {term: {...}}}` (see `resolve`).
    A method with no supervising term gets plain cross-entropy added first."""
    names = list(spec["terms"])
    if not any(TERMS[n].supervises for n in names):
        names.insert(0, "ce")
    terms = [TERMS[n](ctx, **spec["params"].get(n, {})) for n in names]
    return Method(terms, ctx.teachers if any(t.uses_teachers for t in terms) else [])
