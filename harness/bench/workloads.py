"""What the benchmarks time, built as a job builds it: random CIFAR stand-ins, trainers, teachers, the plain loop."""
from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import numpy as np
import torch

from harness.bench.timing import Timer, timer


def random_cifar(n: int, seed: int = 0):
    """n random training images (and 100 each for validation and test): speed ignores the pixels."""
    from harness.data import Cifar

    rng = np.random.default_rng(seed)
    images = lambda k: rng.integers(0, 256, (k, 32, 32, 3), dtype=np.uint8)
    labels = lambda k: rng.integers(0, 10, k).astype(np.uint8)
    return Cifar(images(n), labels(n), images(100), labels(100), images(100), labels(100), "random")


def config(method: str, options: dict, precision: str, batch: int) -> dict:
    """A job config as the grid would resolve it: method by grid name, `options` its [methods] tables."""
    from harness.config import schema
    from harness.config.grid import resolve_method

    recipe = {k: v.default for k, v in schema.TRAIN.items() if k != "arch"}
    recipe.update(batch_size=batch, mixed_precision=precision, epochs=1000)
    problems = []
    spec = resolve_method(method, options, "bench", problems)
    assert not problems, problems
    return {"arch": "resnet20", "seed": 0, "teachers": [], "recipe": recipe,
            "method": {"terms": spec["terms"], "params": spec["params"]}}


def harness_trainer(method: str, args, teachers=(), options: dict | None = None, **build):
    """A ResNet20 trainer for `method` on args.steps batches of random images; `build` goes to build_trainer."""
    from harness.run.train import build_trainer

    return build_trainer(config(method, options or {}, args.precision, args.batch), {"channels_last": True},
                         random_cifar(args.steps * args.batch), list(teachers), **build)


def saved_teacher(arch: str) -> tuple[str, str]:
    """(arch, path) of a randomly initialised teacher checkpoint (speed does not need a trained one).
    Its BatchNorm statistics are those of a few random batches: with the initial ones (mean 0,
    variance 1) a deep network's activations grow layer after layer until, under bf16, the
    distillation losses overflow and the timed training stops on a non-finite loss."""
    from harness.models import build_model, checkpoint

    torch.manual_seed(0)
    model = build_model(arch)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # a plain average over the batches below
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(64, 3, 32, 32))
    path = Path(tempfile.mkdtemp()) / f"{arch}.pt"
    checkpoint.save_weights(path, arch, model)
    return arch, str(path)


def time_epochs(trainer) -> Timer:
    """A timer of one harness epoch (args.steps steps), seconds per step as the training loop measures it."""
    from harness.run.train import train_epoch

    epoch = iter(range(10**6))
    steps = trainer.data.steps_per_epoch(trainer.recipe["batch_size"])
    return lambda: train_epoch(trainer, next(epoch))["epoch_time_s"] / steps


def plain_loop(args, arch: str = "resnet20") -> Timer:
    """The reference: what a careful person writes by hand for the same model, batch and precision."""
    from harness.models import build_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build_model(arch).to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(args.steps * args.batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (len(x),), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    batches = itertools.cycle([(x[i * args.batch:(i + 1) * args.batch], y[i * args.batch:(i + 1) * args.batch])
                               for i in range(args.steps)])  # each timed epoch: the same steps, in order

    def step() -> None:
        xb, yb = next(batches)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timer(step, args.steps, device)
