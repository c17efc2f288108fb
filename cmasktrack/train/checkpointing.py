"""Training checkpoints: ``<out>/checkpoints/iter_XXXXXXXX/`` holding

* ``model.safetensors`` + ``config.json`` — the model (float32), written by
  ``save_pretrained`` and loadable with ``CMaskTrack.from_pretrained`` like any model directory;
* ``training_state.pt`` — optimiser, LR scheduler and AMP scaler state, the iteration, and the
  RNG states of Python, NumPy and PyTorch (CPU and CUDA) — plain tensors and containers only,
  read back with ``torch.load(weights_only=True)``;
* ``train_config.json`` — the run's :class:`TrainConfig`.

A checkpoint is written into a temporary directory and renamed into place, so an interrupted
save never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from ..weights import fit_and_load, read_model_dir

__all__ = ["CHECKPOINT_DIR", "checkpoint_path", "list_checkpoints", "latest_checkpoint", "save_checkpoint",
           "load_checkpoint", "rng_state", "set_rng_state"]

CHECKPOINT_DIR = "checkpoints"
STATE_NAME = "training_state.pt"
_NAME = re.compile(r"^iter_(\d{8})$")


def checkpoint_path(out_dir: str, iteration: int) -> str:
    return os.path.join(out_dir, CHECKPOINT_DIR, f"iter_{iteration:08d}")


def list_checkpoints(out_dir: str) -> List[str]:
    """Complete checkpoints under ``out_dir``, oldest first."""
    root = os.path.join(out_dir, CHECKPOINT_DIR)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        m = _NAME.match(name)
        path = os.path.join(root, name)
        if m and os.path.isfile(os.path.join(path, STATE_NAME)):
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str) -> Optional[str]:
    cks = list_checkpoints(out_dir)
    return cks[-1] if cks else None


def rng_state() -> Dict[str, Any]:
    """Python, NumPy and PyTorch RNG states as plain tensors / containers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out_dir: str, iteration: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, scaler: Optional[Any], train_config: Any, keep: int = 0) -> str:
    """Write the checkpoint of ``iteration`` (see the module docstring); keep the ``keep`` most
    recent ones (0: all). Returns its directory."""
    from .config import TRAIN_CONFIG_NAME

    final = checkpoint_path(out_dir, iteration)
    tmp = final + ".tmp"
    if os.path.isdir(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    model.save_pretrained(tmp)
    train_config.save(os.path.join(tmp, TRAIN_CONFIG_NAME))
    torch.save({
        "iteration": int(iteration),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
    }, os.path.join(tmp, STATE_NAME))
    if os.path.isdir(final):
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep > 0:
        for old in list_checkpoints(out_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                    scheduler: Any = None, scaler: Optional[Any] = None, restore_rng: bool = True) -> int:
    """Load a checkpoint directory into the given objects; returns its iteration."""
    state_path = os.path.join(path, STATE_NAME)
    if not os.path.isfile(state_path):
        raise FileNotFoundError(f"{path} is not a training checkpoint: {STATE_NAME} is missing")
    _, weights = read_model_dir(path)
    fit_and_load(model, weights, path)
    st = torch.load(state_path, map_location="cpu", weights_only=True)
    if optimizer is not None:
        optimizer.load_state_dict(st["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(st["scheduler"])
    if scaler is not None and st.get("scaler") is not None:
        scaler.load_state_dict(st["scaler"])
    if restore_rng:
        set_rng_state(st["rng"])
    return int(st["iteration"])
