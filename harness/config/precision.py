"""Which autocast precision a job trains in, and whether the hardware does it natively.

bf16 is fast only where the hardware has it: CUDA GPUs from compute capability 8.0 (Ampere), and
CPUs with AVX-512 BF16 or AMX. Elsewhere PyTorch emulates it: a V100 or T4 runs bf16 slower than
float32, and an AVX2-only CPU multiplies bf16 matrices some hundred times slower than float32. So
`mixed_precision = "auto"` (the default) resolves, at plan time, to "bf16" where it is native and
to "no" (float32) elsewhere; the resolved value is what enters the job key. An explicit "bf16"
on hardware that would emulate it is refused with the reason, before anything runs, and again by
the job on the device it actually gets (a SLURM node may differ from the launcher's host).
"""
from __future__ import annotations

from pathlib import Path

import torch

CHOICES = ("auto", "no", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX, as oneDNN sees it (falling back to the kernel's CPU flags)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_problem(device: torch.device) -> str | None:
    """Why bf16 would be emulated on `device`, or None where it is native."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return None
        return (f"{torch.cuda.get_device_name(device)} has compute capability {major}.{minor}; bf16 needs 8.0 "
                "(Ampere) or newer and is emulated, slower than float32, below it: use 'fp16' or 'no'")
    if device.type == "cpu" and not cpu_has_native_bf16():
        return (f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has neither AVX-512 BF16 nor AMX: bf16 is "
                "emulated there, some hundred times slower than float32: use 'no' (or 'auto')")
    return None


def resolve(requested: str, on_gpu: bool) -> str:
    """`auto` → 'bf16' where native, else 'no'; any other value as given. Jobs that will get a GPU
    (a SLURM grid with gpus_per_job) resolve to 'bf16'; the job checks the GPU it gets."""
    if requested != "auto":
        return requested
    if on_gpu:
        return "bf16" if not torch.cuda.is_available() or bf16_problem(torch.device("cuda")) is None else "no"
    return "bf16" if cpu_has_native_bf16() else "no"


def check(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run natively (raised as ValueError: the job fails with it)."""
    if precision == "bf16":
        problem = bf16_problem(device)
        if problem:
            raise ValueError(f"mixed_precision = 'bf16': {problem}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("mixed_precision = 'fp16' needs a CUDA GPU; this job runs on the CPU")
