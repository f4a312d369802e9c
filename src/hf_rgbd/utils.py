"""Progress bars that can be switched off, and scoped torch thread limits.

Progress bars follow `datasets.utils.tqdm`: [`disable_progress_bars`] / [`enable_progress_bars`] switch them off
and on for the whole process, [`are_progress_bars_disabled`] tells, and the environment variable
`HF_RGBD_DISABLE_PROGRESS_BARS` (read at import; `1` / `true` / `yes` / `on` disables, `0` / `false` ... enables)
has the priority over both functions. Long steps also take a per-call `disable_tqdm` (as `TrainingArguments`).

[`torch_thread_limit`] caps torch's intra-op thread count for one step and restores it afterwards (also on an
error). Nothing here changes a setting at import.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from tqdm.auto import tqdm

from .processors.validation_rgbd import check_int

__all__ = [
    "are_progress_bars_disabled",
    "disable_progress_bars",
    "enable_progress_bars",
    "progress_bar",
    "torch_thread_limit",
]

_ENV_VAR = "HF_RGBD_DISABLE_PROGRESS_BARS"
_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


def _read_env_switch() -> bool | None:
    """True / False when the environment variable is set (it has the priority), None when it is not."""
    value = os.environ.get(_ENV_VAR)
    return None if value is None else value.strip().upper() in _TRUE_VALUES


HF_RGBD_DISABLE_PROGRESS_BARS: bool | None = _read_env_switch()
_progress_bars_disabled: bool = HF_RGBD_DISABLE_PROGRESS_BARS or False


def _set_progress_bars_disabled(disabled: bool) -> None:
    """Switch the global state, unless the environment variable says the opposite (a warning says so)."""
    global _progress_bars_disabled
    if HF_RGBD_DISABLE_PROGRESS_BARS is not None and HF_RGBD_DISABLE_PROGRESS_BARS != disabled:
        action, value = ("disable", 0) if disabled else ("enable", 1)
        warnings.warn(
            f"Cannot {action} progress bars: environment variable `{_ENV_VAR}={value}` is set and has priority.",
            stacklevel=3,
        )
        return
    _progress_bars_disabled = disabled


def disable_progress_bars() -> None:
    """Disable hf_rgbd's progress bars globally, unless `HF_RGBD_DISABLE_PROGRESS_BARS=0` is set (it has the
    priority; a warning says so)."""
    _set_progress_bars_disabled(True)


def enable_progress_bars() -> None:
    """Enable hf_rgbd's progress bars globally, unless `HF_RGBD_DISABLE_PROGRESS_BARS=1` is set (it has the
    priority; a warning says so)."""
    _set_progress_bars_disabled(False)


def are_progress_bars_disabled() -> bool:
    """Whether hf_rgbd's progress bars are globally disabled ([`disable_progress_bars`] or the environment)."""
    return _progress_bars_disabled


def progress_bar(
    iterable: Iterable[Any] | None = None, *, disable_tqdm: bool | None = None, **tqdm_kwargs: Any
) -> tqdm:
    """A `tqdm.auto.tqdm` bar (on stderr), off when `disable_tqdm` is true or bars are globally disabled."""
    if disable_tqdm is not None and not isinstance(disable_tqdm, bool):
        raise TypeError(f"`disable_tqdm` must be a bool or None, got {type(disable_tqdm).__name__}.")
    return tqdm(iterable, disable=bool(disable_tqdm) or are_progress_bars_disabled(), **tqdm_kwargs)


@contextmanager
def torch_thread_limit(max_threads: int | None, name: str = "max_threads") -> Iterator[int]:
    """Run a block with at most `max_threads` torch intra-op threads (None: as they are); the previous count is
    restored on exit, also on an error. Yields the count in effect inside the block. `name` is the argument an
    invalid `max_threads` is reported as.

    For phases made of many small ops (each parallel region far shorter than a scheduler time slice): with another
    process busy on a core, every region waits for the thread that lost its core, and one thread runs them faster.
    """
    previous = torch.get_num_threads()
    limited = previous if max_threads is None else min(previous, check_int(max_threads, name, 1))
    if limited != previous:
        torch.set_num_threads(limited)
    try:
        yield limited
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
