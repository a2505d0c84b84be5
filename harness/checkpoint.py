"""Checkpoints: written atomically (temp file + rename), read with `weights_only=True`."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.atomic import atomic_write_bytes
from harness.models import build_model


def save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: Path, device: torch.device | str = "cpu") -> Any:
    return torch.load(path, map_location=device, weights_only=True)


def save_weights(path: Path, arch: str, model: nn.Module) -> None:
    """Final weights in the format teachers are loaded from: {"arch", "state_dict"}."""
    save(path, {"arch": arch, "state_dict": model.state_dict()})


def load_frozen(path: str | Path, arch: str, device: torch.device,
                memory_format: torch.memory_format = torch.channels_last) -> nn.Module:
    """A teacher: built, loaded (ours or a bare state dict), frozen, in eval mode, on the device."""
    obj = load(Path(path))
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    model = build_model(arch)
    model.load_state_dict(state)
    model.requires_grad_(False).eval()
    return model.to(device, memory_format=memory_format)
