"""Whether this machine has an NVIDIA GPU, decided without importing torch (slow at start-up)."""

from __future__ import annotations

import shutil
from pathlib import Path

NVIDIA_CONTROL_DEVICE = Path("/dev/nvidiactl")


def nvidia_gpu_visible() -> bool:
    """True when the NVIDIA driver's control device or ``nvidia-smi`` is present."""
    return NVIDIA_CONTROL_DEVICE.exists() or shutil.which("nvidia-smi") is not None
