"""The one timing helper: timers that wait for the device, alternated after a warm-up, their medians, the result Row."""
from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

Timer = Callable[[], float]


@dataclass
class Row:
    """One measured figure with its goal, e.g. Row("kd", 0.94, "≤", 1.05, "×", "kd step 405 ms ...")."""

    name: str
    value: float
    op: str
    goal: float
    unit: str
    detail: str

    @property
    def met(self) -> bool:
        return {"≥": self.value >= self.goal, "≤": self.value <= self.goal, "<": self.value < self.goal}[self.op]


def sync(device: torch.device | None) -> None:
    """Wait for the work queued on a CUDA device (a CPU runs it before returning)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def timer(work: Callable[[], object], calls: int = 1, device: torch.device | None = None) -> Timer:
    """A timer: run `work` `calls` times between two waits for `device`; seconds per call."""

    def measure() -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            work()
        sync(device)
        return (time.perf_counter() - start) / calls

    return measure


def alternate(repeats: int, warm_up: bool = True, **timers: Timer) -> dict[str, float]:
    """Warm each timer up once (unless `warm_up` is false), then run them in turn `repeats` times;
    the median of each. Alternating makes a noisy machine shift every side alike."""
    if warm_up:
        for measure in timers.values():
            measure()
    samples = {name: [] for name in timers}
    for _ in range(repeats):
        for name, measure in timers.items():
            samples[name].append(measure())
    return {name: statistics.median(values) for name, values in samples.items()}


def device_name() -> str:
    """What the figures were measured on: the GPU's name, or the CPU's model and vector extension."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
                 platform.machine())
    return f"CPU {model} ({torch.backends.cpu.get_cpu_capability()})"


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
