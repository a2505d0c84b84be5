"""Checkpoints: written atomically (temp file + rename), read with `weights_only=True`.

Teacher weights may also come as `.safetensors` (tensors only, no pickle at all): the format the
project ships its demo teacher in, and what `python -m harness.export` writes from a finished job.
"""
from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.atomic import UnreadableFile, atomic_write_bytes
from harness.models import build_model


def save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: Path, device: torch.device | str = "cpu") -> Any:
    """A torch.save file, read with weights_only=True; UnreadableFile where it is damaged, not one,
    or holds pickled objects besides tensors (the cause kept as `__cause__`)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if not found:
            raise not_weights(path) from e
        raise UnreadableFile(f"{path}: refused: it holds pickled objects besides tensors ({found.group(1)}; "
                             "loaded with weights_only=True)") from e
    except Exception as e:  # torch.load raises many kinds on a file that is not its own
        raise not_weights(path, e) from e


def not_weights(path: Path, error: Exception | None = None) -> UnreadableFile:
    """The refusal of a file that is neither a torch.save nor a safetensors file."""
    return UnreadableFile(f"{path}: not a weights file (torch.save or .safetensors)"
                          + (f": {type(error).__name__}" if error else ""))


def save_weights(path: Path, arch: str, model: nn.Module) -> None:
    """Final weights in the format teachers are loaded from: {"arch", "state_dict"}."""
    save(path, {"arch": arch, "state_dict": model.state_dict()})


def save_safetensors(path: Path, arch: str, model: nn.Module, metadata: dict[str, str]) -> None:
    """Weights as safetensors, with the architecture and provenance in the header's metadata."""
    from safetensors.torch import save as to_bytes

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, to_bytes(state, metadata={"arch": arch, **metadata}))


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a weights file: safetensors, ours ({"arch", "state_dict"}) or a bare state
    dict; UnreadableFile where the file is none of them (pickled code among them: weights_only)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except FileNotFoundError:
            raise
        except Exception as e:  # safetensors raises several kinds on a file that is not its own
            raise not_weights(path, e) from e
    obj = load(path)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise UnreadableFile(f"{path}: not a state dict")
    return state


def load_frozen(path: str | Path, arch: str, device: torch.device,
                memory_format: torch.memory_format = torch.channels_last, num_classes: int = 10) -> nn.Module:
    """A teacher: built, loaded (safetensors, ours or a bare state dict), frozen, in eval mode, on the device."""
    state = read_state(path)
    model = build_model(arch, num_classes)
    model.load_state_dict(state)
    model.requires_grad_(False).eval()
    return model.to(device, memory_format=memory_format)
