"""Where a run computes: the device (CUDA, then MPS, then CPU) and its mixed precision."""

from __future__ import annotations

import os

import torch

from graphcore.core.diagnostics import GraphError


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA, then MPS, then CPU; under torchrun each rank takes its LOCAL_RANK GPU."""
    if name == "auto":
        if torch.cuda.is_available():
            name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise GraphError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GraphError(f"device {name!r}: CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise GraphError(f"device {name!r}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}; "
                         f"under torchrun each process needs a GPU of its own (use --nproc {count} or --device cpu)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise GraphError(f"device {name!r}: MPS is not available on this machine")
    return device


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """Mixed precision on CUDA only: bf16 where the GPU has it, else fp16 (with a grad scaler)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
