"""What a training run reports: a progress bar (on a terminal) or log lines on the main
process, and json lines in ``<out>/train_log.jsonl``."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Dict

__all__ = ["TrainLogger", "LOG_NAME", "format_duration"]

#: File name of the json-lines log in the output directory.
LOG_NAME = "train_log.jsonl"


def format_duration(seconds: float) -> str:
    """``H:MM:SS``."""
    seconds = int(max(0, seconds))
    hours, rem = divmod(seconds, 3600)
    minutes, secs = divmod(rem, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class TrainLogger:
    """Progress bar (tqdm, on a terminal) or log lines on the main process; json lines to
    ``<out>/train_log.jsonl``. Silent on the other processes."""

    def __init__(self, out_dir: str, main: bool, progress: bool):
        self.out_dir = out_dir
        self.main = main
        self.progress = progress and main
        self.bar = None

    def info(self, message: str) -> None:
        if not self.main:
            return
        if self.bar is not None:
            self.bar.write(f"[cmasktrack.train] {message}", file=sys.stderr)
        else:
            print(f"[cmasktrack.train] {message}", file=sys.stderr, flush=True)

    def start(self, total: int, initial: int) -> None:
        if self.progress and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, file=sys.stderr)

    def tick(self, values: Dict[str, float], lr: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"loss {values['total_loss']:.3f} lr {lr:.2e}", refresh=False)

    def log(self, iteration: int, total: int, epoch: int, values: Dict[str, float], lr: float, sec: float,
            eta: float) -> None:
        if not self.main:
            return
        record = {"iteration": iteration, "epoch": epoch, "lr": lr, "s_per_iter": sec, **values}
        with open(os.path.join(self.out_dir, LOG_NAME), "a") as f:
            f.write(json.dumps(record) + "\n")
        if not self.progress:
            return
        parts = " ".join(f"{k[5:] if k.startswith('loss_') else k} {v:.4f}" for k, v in values.items()
                         if k.startswith("loss_"))
        line = (f"iter {iteration}/{total} epoch {epoch + 1} | loss {values.get('total_loss', math.nan):.4f} "
                f"({parts}) | acc {values.get('acc', 0):.1f} match_acc {values.get('match_acc', 0):.1f} | "
                f"lr {lr:.3g} | {sec:.2f} s/iter | ETA {format_duration(eta)}")
        self.info(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
