"""The operations on the broker process itself: ``ping``, ``status``, ``stats``, ``stop``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ._access import admin_everywhere, nothing
from ._context import Context
from ._registry import Layer, op

logger = logging.getLogger("prontodb.server")


@op("ping", Layer.BROKER, access=nothing, summary="Whether the broker answers.")
async def ping(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    return "pong"


@op("status", Layer.BROKER, access=nothing, summary="A map describing the broker.")
async def status(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    return ctx.status()


@op(
    "stats",
    Layer.BROKER,
    access=nothing,
    cli=None,  # `prontodb top` is its reader; `status` is the command for people
    summary="The broker's metrics as plain data: counters, histograms, gauges (docs/METRICS.md).",
)
async def stats(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    return ctx.snapshot()


@op("stop", Layer.BROKER, access=admin_everywhere, summary="Shut the broker down cleanly.")
async def stop(ctx: Context, user: str, args: Mapping[str, Any]) -> Any:
    logger.info("stop requested by a client")
    ctx.request_stop()
    return None
