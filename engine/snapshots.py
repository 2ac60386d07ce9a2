"""Glue between tasks and the state/storage layer (``checkpoint`` package)."""

from __future__ import annotations

from typing import Any

from .operator import OperatorContext

__all__ = ["keyed_backend_factory"]


def keyed_backend_factory(ctx: OperatorContext) -> Any:
    """The keyed state backend for a keyed operator: heap state, stored per key group."""
    from checkpoint import HeapKeyedStateBackend

    return HeapKeyedStateBackend(ctx.key_group_range, ctx.max_parallelism, ctx.clock)
