"""Grid files: TOML → validated, resolved grid → plan of jobs with content keys.

Every problem in a grid file is reported at once, each with its key path and what is allowed;
nothing runs until the file is clean. See `harness.config.schema` for the keys.
"""
from __future__ import annotations

import hashlib
import math
import re
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from harness.config import precision, schema
from harness.data import datasets
from harness.config.schema import REQUIRED, Key, suggest, type_ok
from methods import TERMS, VARIANTS

NO_TEACHERS = "none"


class GridError(Exception):
    """All problems of a grid file; `str()` lists them one per line, each with its key path."""

    def __init__(self, source: str, problems: list[tuple[str, str]], overrides: list[str] = ()):
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s)"] if len(problems) > 1 else []
        for path, msg in problems:
            path = attributed(path, overrides)  # a --set's problem is told as the --set's, not the file's
            lines.append(f"{path}: {msg}" if path.startswith("--set ") else f"{source}: {path}: {msg}" if path
                         else f"{source}: {msg}")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Job:
    """One training run. `config` is everything that changes its result; `key` hashes it."""

    key: str
    stage: str  # "teacher" | "student"
    method: str  # the grid's name for the method (a label: not in the key)
    seed: int
    teacher_set: str  # label: teacher names joined by "+", or "none"
    arch: str
    teachers: tuple[str, ...]  # keys of the teachers it needs
    config: dict = field(repr=False, hash=False, compare=False)
    runtime: dict = field(default_factory=dict, repr=False, hash=False, compare=False)  # not in the key


@dataclass
class Plan:
    grid: dict  # the resolved grid
    jobs: list[Job]  # teachers first, then students
    external: dict[str, dict]  # key of a teacher trained elsewhere -> {"arch", "path"}

    def stage(self, name: str) -> list[Job]:
        return [j for j in self.jobs if j.stage == name]


def job_key(config: dict) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of a resolved config."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- loading and validation

def load(path: str | Path, overrides: list[str] = (), cuda_available: bool = False) -> dict:
    """Read, override (`section.key=value`, the value in TOML syntax) and validate a grid file."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise GridError(str(path), [("", "no such file")]) from None
    except IsADirectoryError:
        raise GridError(str(path), [("", "is a folder; expected a grid file (TOML)")]) from None
    except UnicodeDecodeError:
        raise GridError(str(path), [("", "not a text file; expected a grid file (TOML, UTF-8)")]) from None
    except OSError as e:
        raise GridError(str(path), [("", f"cannot be read: {e.strerror}")]) from None
    except tomllib.TOMLDecodeError as e:
        raise GridError(str(path), [("", f"not valid TOML: {e}")]) from None
    problems: list[tuple[str, str]] = []
    for item in overrides:
        apply_override(raw, item, problems)
    grid = validate(raw, problems, cuda_available)
    if problems:
        raise GridError(str(path), problems, overrides)
    return grid


def attributed(key: str, overrides: list[str]) -> str:
    """A problem with a key that a --set gave is that --set's, not the grid file's."""
    for item in reversed(overrides):  # the last --set of a key is the one in force
        dotted = item.partition("=")[0].strip()
        if not key.startswith("--set ") and (key == dotted or key.startswith((dotted + ".", dotted + "["))):
            return f"--set {item}: {key}"
    return key


def apply_override(raw: dict, item: str, problems: list) -> None:
    """`--set train.epochs=3`: the value is parsed as TOML, else taken as a string."""
    dotted, sep, text = item.partition("=")
    if not sep or not dotted.strip():
        problems.append((f"--set {item}", "expected KEY=VALUE, e.g. train.epochs=3"))
        return
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    *parents, leaf = dotted.strip().split(".")
    if not parents and leaf in (*schema.SECTIONS, "teachers", "students", "methods"):
        problems.append((f"--set {item}", f"{leaf!r} is a table: set one of its keys, e.g. --set {leaf}.KEY=VALUE"))
        return
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            problems.append((f"--set {item}", f"{part!r} is not a table"))
            return
    node[leaf] = value


def check_table(table: Any, keys: dict[str, Key], where: str, problems: list) -> dict:
    """Values of one table with defaults filled in; unknown keys, wrong types, bad choices reported."""
    if not isinstance(table, dict):
        problems.append((where, f"expected a table, got {type(table).__name__}"))
        return {}
    out = {}
    for name, value in table.items():
        path = f"{where}.{name}" if where else name
        if name not in keys:
            problems.append((path, "unknown key" + suggest(name, keys)))
        elif not type_ok(value, keys[name].type):
            problems.append((path, f"expected {keys[name].type}, got {value!r}"))
        elif not _finite(value):
            problems.append((path, f"must be a finite number, got {value!r}"))
        elif keys[name].choices and value not in keys[name].choices:
            problems.append((path, f"{value!r} is not allowed" + suggest(str(value), keys[name].choices)))
        elif keys[name].minimum is not None and _below(value, keys[name].minimum):
            problems.append((path, f"must be ≥ {keys[name].minimum}, got {value!r}"))
        elif keys[name].above is not None and _below(value, keys[name].above, strict=False):
            problems.append((path, f"must be > {keys[name].above}, got {value!r}"))
        elif keys[name].maximum is not None and _below(keys[name].maximum, value):
            problems.append((path, f"must be ≤ {keys[name].maximum}, got {value!r}"))
        else:
            out[name] = value
    for name, key in keys.items():
        if name in table:
            continue
        if key.default is REQUIRED and not key.optional:
            problems.append((f"{where}.{name}" if where else name, f"required ({key.doc})"))
        else:
            out[name] = None if key.default is REQUIRED else key.default
    return out


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_name(name: str | None, problems: list) -> None:
    """The name is a folder under --out: one plain path component, so that nothing is written
    outside the results folder."""
    if isinstance(name, str) and not NAME.fullmatch(name):
        problems.append(("name", f"{name!r}: expected a folder name of letters, digits, '.', '_' and '-', starting "
                         "with a letter or digit, at most 100 characters (results go to <out>/<name>/)"))


def _finite(value) -> bool:
    """NaN and ±inf (which TOML writes as nan, inf) are no valid setting anywhere."""
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def _below(value, minimum, strict: bool = True) -> bool:
    """Whether a number (or any number of a list) is below `minimum` (or at it, with strict=False);
    a list bound against a number compares each element the other way round."""
    below = (lambda v, m: v < m) if strict else (lambda v, m: v <= m)
    if isinstance(value, list):
        return any(below(v, minimum) for v in value)
    if isinstance(minimum, list):
        return any(below(value, m) for m in minimum)
    return below(value, minimum)


def validate(raw: dict, problems: list, cuda_available: bool = False) -> dict:
    top = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in raw.items() if isinstance(v, dict)}
    allowed = {**schema.TOP, **{s: None for s in (*schema.SECTIONS, "teachers", "students", "methods")}}
    for name in tables:
        if name not in allowed or name in schema.TOP:
            problems.append((name, "unknown table" + suggest(name, allowed)))
    grid = check_table(top, schema.TOP, "", problems)
    check_name(grid.get("name"), problems)
    for section, keys in schema.SECTIONS.items():
        grid[section] = check_table(tables.get(section, {}), keys, section, problems)
    grid["teachers"] = {
        name: check_teacher(t, f"teachers.{name}", problems, num_classes(grid))
        for name, t in tables.get("teachers", {}).items()
    }
    grid["students"] = {
        name: check_student(s, f"students.{name}", problems) for name, s in tables.get("students", {}).items()
    }
    if grid["students"] and "arch" in tables.get("train", {}):
        problems.append(("train.arch", "the [students.NAME] tables name the students: train.arch would be none of "
                         "them; remove it (a student of that arch is one more [students.NAME] table)"))
    grid["methods"] = tables.get("methods", {})
    check_method_tables(grid["methods"], problems)
    check_grid_axes(grid, problems)
    check_students(grid, problems)
    check_eval(grid["eval"], problems)
    check_tracking(grid, problems)
    cluster = grid["cluster"]
    on_gpu = cluster.get("gpus_per_job", 0) > 0 if cluster.get("executor") == "slurm" else cuda_available
    resolve_precision(grid, on_gpu, problems)
    check_ranks(grid, problems)
    check_batch_sizes(grid, problems)
    check_milestones(grid, problems)
    timing = cluster.get("signal_delay_s"), cluster.get("timeout_min")  # absent where invalid (reported)
    if cluster.get("executor") == "slurm" and None not in timing and timing[0] + 60 >= timing[1] * 60:
        problems.append(("cluster.signal_delay_s", f"{cluster['signal_delay_s']} s leaves no time to train before the "
                         f"USR2 warning: SLURM may send it up to 60 s early, so it must be below timeout_min·60 − 60 = "
                         f"{cluster['timeout_min'] * 60 - 60} s"))
    grid["warnings"] = unused_cluster_keys(tables.get("cluster", {}), cluster.get("executor"))
    if not problems:
        check_method_builds(grid, problems)
    if not problems:
        check_labels(grid, problems)
    problems[:] = list(dict.fromkeys(problems))
    return grid


def unused_cluster_keys(written: Any, executor: str | None) -> list[str]:
    """[cluster] keys the grid sets that its executor never reads (slurm's under local, say): not
    an error (one grid serves laptop and cluster), but said, so that no one believes them in force."""
    if not isinstance(written, dict) or executor is None:
        return []
    readers = {"slurm:": "slurm", "debug executor:": "debug"}
    unused = []
    for name in written:
        doc = schema.CLUSTER[name].doc if name in schema.CLUSTER else ""
        reader = next((e for prefix, e in readers.items() if doc.startswith(prefix)), None)
        if reader and reader != executor:
            unused.append(f"cluster.{name} is set but only the {reader} executor reads it (executor = {executor!r}): "
                          "ignored")
    return unused


def world_size(cluster: dict) -> int:
    """Processes (DDP ranks) that train each job: SLURM tasks, one per GPU; one elsewhere."""
    if cluster.get("executor") != "slurm":
        return 1
    return cluster.get("tasks_per_job") or max(cluster.get("gpus_per_job") or 0, 1)


def check_ranks(grid: dict, problems: list) -> None:
    """One rank per GPU, and every rank the same share of each batch: BatchNorm statistics are
    per rank (batch / ranks images), so the rank count is part of the job key (see `plan`)."""
    cluster, world = grid["cluster"], world_size(grid["cluster"])
    gpus, tasks = cluster.get("gpus_per_job") or 0, cluster.get("tasks_per_job")
    if cluster.get("executor") == "slurm" and gpus and tasks not in (None, gpus):
        problems.append(("cluster.tasks_per_job", f"{tasks} tasks on {gpus} GPUs: DDP needs one task per GPU "
                         f"(two ranks on one GPU fail in NCCL, fewer leave GPUs idle); leave it unset or set {gpus}"))
        return
    for where, recipe in recipe_tables(grid):
        batch = recipe.get("batch_size")
        if world > 1 and batch and batch % world:
            problems.append((f"{where}.batch_size", f"{batch} does not split evenly over {world} ranks "
                             f"(cluster.tasks_per_job / gpus_per_job): use a multiple of {world}"))


def recipe_tables(grid: dict) -> list[tuple[str, dict]]:
    """[train] and every teacher's and student's table, with the key path to name in a problem."""
    return [("train", grid["train"]), *((f"teachers.{n}", t) for n, t in grid["teachers"].items()),
            *((f"students.{n}", t) for n, t in grid.get("students", {}).items())]


def num_classes(grid: dict) -> int:
    """The classes of the grid's data set: the size of every model's output."""
    return datasets.get(grid["data"].get("dataset", datasets.DEFAULT)).num_classes


def check_batch_sizes(grid: dict, problems: list) -> None:
    """A batch larger than the training split would give epochs of no step."""
    data = grid["data"]
    if data.get("dataset") not in datasets.NAMES or data.get("val_size") is None:
        return
    n_train = data.get("limit_train") or datasets.TRAIN_IMAGES - data["val_size"]
    for where, recipe in recipe_tables(grid):
        if (recipe.get("batch_size") or 0) > n_train:
            problems.append((f"{where}.batch_size", f"{recipe['batch_size']} exceeds the {n_train} training images "
                             "(data.limit_train, or the training set less data.val_size)"))


def check_milestones(grid: dict, problems: list) -> None:
    """A multistep milestone past the last epoch would never lower the learning rate."""
    for where, table in recipe_tables(grid):
        recipe = recipe_for(grid, None if where == "train" else table)
        if recipe.get("schedule") != "multistep" or not isinstance(recipe.get("epochs"), int):
            continue
        late = [m for m in recipe.get("milestones") or [] if isinstance(m, (int, float)) and m >= 1
                and m > recipe["epochs"]]
        if late:
            problems.append((f"{where}.milestones", f"{late[0]} is past the last epoch ({recipe['epochs']}); "
                             "values < 1 are fractions of the epochs"))


def resolve_precision(grid: dict, on_gpu: bool, problems: list) -> None:
    """`auto` becomes what the jobs' hardware runs natively (harness.config.precision); a precision the
    jobs would emulate or cannot run is refused where this host can tell (local and debug jobs run
    here; SLURM jobs check their node)."""
    import torch

    here = grid["cluster"].get("executor") != "slurm"
    device = torch.device("cuda" if on_gpu and torch.cuda.is_available() else "cpu")
    for where, recipe in recipe_tables(grid):
        if recipe.get("mixed_precision") is None:
            continue  # a teacher without its own inherits [train]'s
        resolved = recipe["mixed_precision"] = precision.resolve(recipe["mixed_precision"], on_gpu)
        if resolved == "fp16" and not on_gpu:
            problems.append((f"{where}.mixed_precision", "'fp16' needs a CUDA GPU and the jobs get none (no GPU "
                             "here, or cluster.gpus_per_job = 0); use 'auto', 'bf16' or 'no'"))
        elif resolved == "bf16" and here and precision.bf16_problem(device):
            problems.append((f"{where}.mixed_precision", f"'bf16': {precision.bf16_problem(device)}"))


def check_eval(table: dict, problems: list) -> None:
    """[eval]: corruption names among the 19 of CIFAR-10-C (or "all"), severities in 1..5."""
    from harness.data.corruptions import ALL

    names = table.get("corruptions")
    if isinstance(names, str) and names != "all":
        problems.append(("eval.corruptions", f"{names!r}: expected \"all\" or a list of names" + suggest(names, ["all"])))
    elif isinstance(names, list):
        for i, name in enumerate(names):
            if name not in ALL:
                problems.append((f"eval.corruptions[{i}]", f"unknown corruption {name!r}" + suggest(name, ALL)))
    if any(s > 5 for s in table.get("severities") or []):
        problems.append(("eval.severities", f"severities are 1..5, got {table['severities']}"))


def check_tracking(grid: dict, problems: list) -> None:
    """[tracking]: known backends whose packages are installed here (a missing one is named with the
    extra that installs it, now rather than as a warning in every job); the project defaults to
    the grid name, and a relative SQLite path of mlflow_uri is taken from where launch runs."""
    import importlib.util

    table = grid["tracking"]
    for i, name in enumerate(table.get("backends") or []):
        if name not in schema.TRACKERS:
            problems.append((f"tracking.backends[{i}]", f"unknown backend {name!r}" + suggest(name, schema.TRACKERS)))
            continue
        missing = [m for m in schema.TRACKERS[name] if importlib.util.find_spec(m) is None]
        if missing:
            problems.append((f"tracking.backends[{i}]", f"{name!r} needs {', '.join(missing)}, not installed "
                             f"here: pip install 'kd-harness[{name}]'"))
    table["project"] = table.get("project") or grid.get("name")
    uri, relative = table.get("mlflow_uri"), re.compile(r"sqlite:///(?![/:])(.+)")
    if isinstance(uri, str) and relative.fullmatch(uri):
        table["mlflow_uri"] = "sqlite:///" + str(Path(relative.fullmatch(uri)[1]).expanduser().resolve())


def check_method_tables(tables: dict, problems: list) -> None:
    """Every [methods.<name>] is a term's defaults or a variant; term defaults are checked even
    where no grid method uses them."""
    for name, table in tables.items():
        if not isinstance(table, dict):
            problems.append((f"methods.{name}", "expected a table"))
        elif name in TERMS:
            term_params(name, tables, {}, name, problems)
        elif "terms" not in table and name not in VARIANTS:
            problems.append((f"methods.{name}", "neither a method term nor a variant (a variant needs `terms = [...]`)"
                             + suggest(name, [*TERMS, *VARIANTS])))


def check_method_builds(grid: dict, problems: list) -> None:
    """Build each method once with every teacher set it meets (on the meta device: no memory, no
    compute), so that what only the models can tell (e.g. a mask grid finer than a teacher's
    map) is reported now, not by a job hours later."""
    import torch

    from harness.models import build_model
    from methods import Context, build_method

    teachers = grid["teachers"]
    with torch.device("meta"):
        for student in students_of(grid):
            model = build_model(student.arch, num_classes(grid))
            for i, name in enumerate(grid["grid"]["method"]):
                spec = student.methods[name]
                for tset in teacher_sets_of(spec, grid, student.teacher_sets):
                    try:
                        build_method(spec, Context(model, [build_model(teachers[t]["arch"], num_classes(grid))
                                                           for t in tset]))
                    except (ValueError, IndexError) as e:
                        who = f" (student {student.name!r}, {student.arch})" if student.name else ""
                        problems.append((f"grid.method[{i}]", f"{name!r}{who} with teachers "
                                         f"{'+'.join(tset) or 'none'}: {e}"))


def check_teacher(table: Any, where: str, problems: list, classes: int) -> dict:
    teacher = check_table(table, schema.TEACHER, where, problems)
    path = teacher.get("checkpoint")
    if path and not Path(path).expanduser().is_file():
        problems.append((f"{where}.checkpoint", f"no such file: {path}"))
    elif path and teacher.get("arch"):
        problem = checkpoint_problem(Path(path).expanduser(), teacher["arch"], classes)
        if problem:
            problems.append((f"{where}.checkpoint", f"{path}: {problem}"))
    return teacher


def checkpoint_problem(path: Path, arch: str, classes: int = 10) -> str | None:
    """Load an external teacher's weights once, safely (weights_only / safetensors), into its
    declared architecture: what would otherwise fail inside every job that uses it."""
    from harness.atomic import UnreadableFile
    from harness.models.checkpoint import read_state
    from harness.models import build_model

    try:
        state = read_state(path)
    except UnreadableFile as e:
        return str(e).removeprefix(f"{path}: ")
    try:
        build_model(arch, classes).load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        return f"does not fit arch {arch!r} with {classes} classes: {str(e).strip().splitlines()[0]}"
    return None


def check_grid_axes(grid: dict, problems: list) -> None:
    axes = grid["grid"]
    for axis in ("method", "seed"):
        if axes.get(axis) == []:
            problems.append((f"grid.{axis}", "empty axis: give at least one value"))
        repeated = sorted({v for v in axes.get(axis) or [] if (axes[axis]).count(v) > 1}, key=str)
        if repeated:  # a repeat would silently collapse into one job
            problems.append((f"grid.{axis}", f"{', '.join(map(repr, repeated))} given more than once"))
    resolved = {}
    for i, name in enumerate(axes.get("method") or []):
        resolved[name] = resolve_method(name, grid["methods"], f"grid.method[{i}]", problems)
    grid["resolved_methods"] = resolved
    teachers = grid["teachers"]
    sets = [(f"grid.teacher_set[{i}]", tset) for i, tset in enumerate(axes.get("teacher_set") or [])]
    sets += [(f"methods.{name}.teacher_sets[{i}]", tset) for name, m in resolved.items() if m
             for i, tset in enumerate(m["teacher_sets"] or [])]
    check_teacher_sets(sets, teachers, problems)
    if grid.get("students"):
        return  # each student's teacher sets are checked with it (check_students)
    for name, m in resolved.items():
        if m and m["uses_teachers"] and not (m["teacher_sets"] or axes.get("teacher_set")):
            problems.append(("grid.teacher_set", f"{name!r} uses teachers, but no teacher set is given "
                             f"(grid.teacher_set, or teacher_sets in [methods.{name}])"))


def check_teacher_sets(sets: list[tuple[str, Any]], teachers: dict, problems: list) -> None:
    """Each (key path, teacher set): not empty, and every name a [teachers.<name>] table."""
    for where, tset in sets:
        if not tset:
            problems.append((where, "empty teacher set; leave teacher-free methods (ce) out of teacher_set"))
        for name in tset:
            if name not in teachers:
                problems.append((where, f"no [teachers.{name}] table" + suggest(name, teachers)))


def check_student(table: Any, where: str, problems: list) -> dict:
    """A [students.NAME] table: its keys as a teacher's (schema.STUDENT), and its `methods` sub-table
    (the student's own parameters of grid methods) kept aside for `check_students`."""
    table = dict(table) if isinstance(table, dict) else table
    methods = table.pop("methods", {}) if isinstance(table, dict) else {}
    student = check_table(table, schema.STUDENT, where, problems)
    if not isinstance(methods, dict):
        problems.append((f"{where}.methods", f"expected a table of [methods.METHOD]-like tables, got {methods!r}"))
        methods = {}
    student["methods"] = methods
    return student


def check_students(grid: dict, problems: list) -> None:
    """Each [students.NAME]: its teacher sets, its own method parameters, and a teacher set for
    every method that uses teachers. Stores each student's resolved methods under
    `resolved_methods`: the grid's, or, where it has a `methods` table, re-resolved with that
    table laid over [methods] (so a term's checks and defaults apply as they do there)."""
    teachers, axes = grid["teachers"], grid["grid"]
    for name, student in grid["students"].items():
        where = f"students.{name}"
        sets = student.get("teacher_sets")
        check_teacher_sets([(f"{where}.teacher_sets[{i}]", t) for i, t in enumerate(sets or [])], teachers, problems)
        own = student["methods"]
        resolved = dict(grid["resolved_methods"])
        if own:
            check_student_methods(own, grid["methods"], f"{where}.methods", problems)
            own = {n: {k: v for k, v in t.items() if k not in METHOD_KEYS}  # reported: resolve without them
                   for n, t in own.items() if isinstance(t, dict)}
            merged, scratch = _overlay(grid["methods"], own), []
            check_method_tables(merged, scratch)
            for i, method in enumerate(axes.get("method") or []):
                resolved[method] = resolve_method(method, merged, f"grid.method[{i}]", scratch)
            # what the grid's own tables get wrong is reported once, as theirs; the rest came from here
            problems += [(f"{where}.{p}" if p.startswith("methods.") else p, msg)
                         for p, msg in scratch if (p, msg) not in problems]
        student["resolved_methods"] = resolved
        default = sets if sets is not None else axes.get("teacher_set")
        for method, m in resolved.items():
            if m and m["uses_teachers"] and not (m["teacher_sets"] or default):
                problems.append((f"{where}.teacher_sets", f"{method!r} uses teachers, but student {name!r} has no "
                                 f"teacher set ({where}.teacher_sets, grid.teacher_set, or teacher_sets in "
                                 f"[methods.{method}])"))


def check_student_methods(own: dict, tables: dict, where: str, problems: list) -> None:
    """[students.NAME.methods.X]: X is a method term or a variant, and the table sets parameters
    only (the variant itself, its terms and teacher sets, is the grid's: [methods.X])."""
    variants = [*VARIANTS, *(n for n, t in tables.items() if isinstance(t, dict) and "terms" in t)]
    for name, table in own.items():
        if not isinstance(table, dict):
            problems.append((f"{where}.{name}", "expected a table of the method's parameters"))
        elif name not in TERMS and name not in variants:
            problems.append((f"{where}.{name}", "neither a method term nor a variant of [methods]"
                             + suggest(name, [*TERMS, *variants])))
        for key in METHOD_KEYS:
            if isinstance(table, dict) and key in table:
                problems.append((f"{where}.{name}.{key}", f"a student sets parameters only: {key} belongs in "
                                 f"[methods.{name}]"))


def _overlay(base: dict, top: dict) -> dict:
    """`top` laid over `base`, tables merged key by key at every depth."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _overlay(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


METHOD_KEYS = ("terms", "teacher_sets")  # keys of a [methods.<name>] table that are not term parameters


def resolve_method(name: str, tables: dict, where: str, problems: list) -> dict | None:
    """A grid method name → `{"terms": [...], "params": {term: {...}}, "uses_teachers": bool}`.

    `name` is a registered term (`kd`), a composition (`kd+at`) or a variant: built in (`cakd`) or
    a `[methods.<name>]` table with `terms = [...]` (a table named like a built-in variant changes
    its options); a variant's other keys go to every term that accepts them, and its
    sub-tables (`[methods.<name>.<term>]`) to that term alone. `[methods.<term>]` sets a term's
    defaults for the whole grid.
    """
    variant = {**VARIANTS.get(name, {}), **tables.get(name, {})}
    teacher_sets = variant.pop("teacher_sets", None)
    if teacher_sets is not None and not schema.type_ok(teacher_sets, "list[list[str]]"):
        problems.append((f"methods.{name}.teacher_sets", f"expected list[list[str]], got {teacher_sets!r}"))
        teacher_sets = None
    if "terms" in variant:
        terms, options = variant["terms"], {k: v for k, v in variant.items() if k != "terms"}
        where = f"methods.{name}.terms"
    else:
        terms, options = name.split("+"), {}
    if not isinstance(terms, list) or not terms or not all(isinstance(t, str) for t in terms):
        problems.append((where, "expected a non-empty list of method terms"))
        return None
    unknown = [t for t in terms if t not in TERMS]
    for t in unknown:
        problems.append((where, f"unknown method {t!r}" + suggest(t, [*TERMS, *VARIANTS, *tables])))
    if unknown:
        return None
    params = {t: term_params(t, tables, options, name, problems) for t in terms}
    for key, value in options.items():
        if not isinstance(value, dict) and not any(key in TERMS[t].defaults for t in terms):
            problems.append((f"methods.{name}.{key}", "no term of this method takes it" + suggest(key, {k for t in terms for k in TERMS[t].defaults})))
    return {"terms": terms, "params": params, "uses_teachers": any(TERMS[t].uses_teachers for t in terms),
            "teacher_sets": teacher_sets}


def teacher_sets_of(spec: dict, grid: dict, default: list[list[str]] | None = None) -> list[list[str]]:
    """The teacher sets a resolved method runs with: its variant's `teacher_sets`, else `default`
    (a student's `teacher_sets`), else the grid's `teacher_set` axis; `[[]]` (once, without
    teachers) for a teacher-free method."""
    if not spec["uses_teachers"]:
        return [[]]
    return spec["teacher_sets"] or (grid["grid"].get("teacher_set") if default is None else default) or []


def term_params(term: str, tables: dict, options: dict, variant: str, problems: list) -> dict:
    """A term's parameters, checked against its declaration (`Term.defaults`, `methods.base.Param`)."""
    defaults = TERMS[term].defaults
    keys = {k: Key(_toml_type(p.default), p.default, choices=p.choices, minimum=p.minimum, above=p.above,
                   maximum=p.maximum) for k, p in TERMS[term].parameters.items()}
    base = {k: v for k, v in tables.get(term, {}).items() if k not in METHOD_KEYS} if term in TERMS else {}
    shared = {k: v for k, v in options.items() if k in defaults}
    own = options.get(term, {}) if isinstance(options.get(term), dict) else {}
    where = f"methods.{variant}.{term}" if own else f"methods.{term}"
    return check_table({**base, **shared, **own}, keys, where, problems)


def _toml_type(default: Any) -> str:
    if isinstance(default, list):
        return "list[" + (_toml_type(default[0]) if default else "str") + "]"
    return {bool: "bool", int: "int", float: "float", str: "str"}[type(default)]


# ---------------------------------------------------------------- expansion

def result_fields(table: dict, keys: dict[str, Key]) -> dict:
    return {k: v for k, v in table.items() if keys[k].affects_result}


def recipe_for(grid: dict, teacher: dict | None = None) -> dict:
    """[train]'s recipe (without `arch`), with a teacher's or student's own values laid over it."""
    recipe = {k: v for k, v in grid["train"].items() if k != "arch"}
    if teacher:
        recipe.update({k: v for k, v in teacher.items() if k in recipe and v is not None})
    return recipe


@dataclass(frozen=True)
class Student:
    """One student of a grid: a [students.NAME] table, or [train] where the grid has none."""

    name: str | None  # None: [train]'s student
    arch: str
    recipe: dict
    teacher_sets: list[list[str]]  # of its teacher-using methods, unless a variant has its own
    methods: dict  # grid method name -> resolved method, with the student's own parameters


def students_of(grid: dict) -> list[Student]:
    if not grid.get("students"):
        return [Student(None, grid["train"]["arch"], recipe_for(grid), grid["grid"].get("teacher_set") or [],
                        grid["resolved_methods"])]
    return [Student(name, s["arch"], recipe_for(grid, s),
                    s["teacher_sets"] if s["teacher_sets"] is not None else grid["grid"].get("teacher_set") or [],
                    s["resolved_methods"]) for name, s in grid["students"].items()]


def teacher_jobs_of(grid: dict, data: dict, world: int) -> tuple[dict[str, Job], dict[str, str], dict[str, dict]]:
    """Every teacher's job (by name), every teacher's key (a job's, or an external checkpoint's
    content digest) and the external checkpoints by key."""
    jobs, keys, external = {}, {}, {}
    for name, t in grid["teachers"].items():
        if t.get("checkpoint"):
            path = str(Path(t["checkpoint"]).expanduser().resolve())
            keys[name] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
            external[keys[name]] = {"arch": t["arch"], "path": path}
            continue
        job = make_job("teacher", "ce", {"terms": ["ce"], "params": {"ce": {}}}, t["seed"], t["arch"],
                       (), NO_TEACHERS, recipe_for(grid, t), data, world)
        keys[name] = job.key
        jobs[name] = job
    return jobs, keys, external


def student_jobs(grid: dict, teacher_keys: dict[str, str], data: dict, world: int):
    """(student, teacher names, job) for each student × method × teacher set × seed."""
    axes = grid["grid"]
    for student in students_of(grid):
        for method in axes["method"]:
            spec = student.methods[method]
            for tset in teacher_sets_of(spec, grid, student.teacher_sets):
                keys = tuple(teacher_keys[n] for n in tset)
                for seed in axes["seed"]:
                    yield student, tset, make_job("student", method, spec, seed, student.arch, keys,
                                                  "+".join(tset) or NO_TEACHERS, student.recipe, data, world)


def check_labels(grid: dict, problems: list) -> None:
    """Runs are told apart in tables and the report by (arch, method, teacher set, seed): two
    students whose jobs share all four yet differ (another recipe, other parameters) would be
    pooled there as one, so the grid is refused. (Identical jobs are one job: no problem.)"""
    if len(grid.get("students") or {}) < 2:
        return
    data, world = result_fields(grid["data"], schema.DATA), world_size(grid["cluster"])
    seen: dict[tuple, tuple[str, str]] = {}
    for student, _, job in student_jobs(grid, teacher_jobs_of(grid, data, world)[1], data, world):
        label = (job.arch, job.method, job.teacher_set, job.seed)
        first, key = seen.setdefault(label, (student.name, job.key))
        if key != job.key and first != student.name:
            problems.append((f"students.{student.name}", f"its {job.arch} {job.method!r} jobs with teachers "
                             f"{job.teacher_set} differ from students.{first}'s but would carry the same label "
                             "(arch, method, teacher set) in the tables and the report, which would pool them: two "
                             "students of one arch may differ in their teacher sets only (another recipe or other "
                             "method parameters: a separate grid)"))


def plan(grid: dict) -> Plan:
    """Students for every combination that matters, plus the teacher jobs they need (once each).
    Each student (a [students.NAME] table, else [train]'s) × method × its teacher sets × seed; a
    teacher-free method does not vary with the teacher set; identical configs share one key."""
    data = result_fields(grid["data"], schema.DATA)
    world = world_size(grid["cluster"])
    teacher_jobs, teacher_keys, external = teacher_jobs_of(grid, data, world)
    students, needed = [], set()
    for _, tset, job in student_jobs(grid, teacher_keys, data, world):
        needed.update(tset)
        students.append(job)
    teachers = [job for name, job in teacher_jobs.items() if name in needed]
    jobs = _unique(teachers + students)
    for job in jobs:  # evaluation settings: not in the key (they change no training result)
        job.runtime["eval"] = dict(grid["eval"])
        if grid.get("tracking", {}).get("backends"):  # nor how a run is watched
            job.runtime["tracking"] = dict(grid["tracking"])
    return Plan(grid, jobs, external)


def make_job(stage, method, spec, seed, arch, teacher_keys, tset_label, recipe, data, world: int = 1) -> Job:
    config = {
        "arch": arch, "seed": seed, "teachers": list(teacher_keys), "data": data,
        "recipe": result_fields(recipe, schema.TRAIN),
        "method": {"terms": spec["terms"], "params": keyed_params(spec["params"])},
    }
    if world > 1:  # per-rank BatchNorm: another rank count is another experiment (absent at 1: keys unchanged)
        config["world_size"] = world
    runtime = {k: v for k, v in recipe.items() if k not in config["recipe"]}
    return Job(job_key(config), stage, method, seed, tset_label, arch, tuple(teacher_keys), config, runtime)


def keyed_params(params: dict[str, dict]) -> dict[str, dict]:
    """Term parameters as the job key covers them: without those declared `keyed_at_default=False`
    while at their default (the job still runs with it: a term fills in what it is not given)."""
    def keyed(term: str, name: str, value: Any) -> bool:
        declared = TERMS[term].parameters.get(name) if term in TERMS else None
        return declared is None or declared.keyed_at_default or value != declared.default

    return {term: {k: v for k, v in p.items() if keyed(term, k, v)} for term, p in params.items()}


def _unique(jobs: list[Job]) -> list[Job]:
    seen: dict[str, Job] = {}
    for job in jobs:
        seen.setdefault(job.key, job)
    return list(seen.values())


def to_record(plan: Plan) -> dict:
    """The plan as JSON-able data (results/<grid>/plan.json), read back by `from_record`."""
    jobs = [{**{f: getattr(j, f) for f in Job.__dataclass_fields__}, "teachers": list(j.teachers)}
            for j in plan.jobs]
    return {"name": plan.grid["name"], "jobs": jobs, "external": plan.external}


def from_record(record: dict) -> list[Job]:
    return [Job(**{**j, "teachers": tuple(j["teachers"])}) for j in record["jobs"]]
