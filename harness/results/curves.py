"""Reading learning curves (``<space>/curve.json``, written by ``harness.study.curves``):
the file, one metric's series against seconds / FLOPs / steps, and the quality note."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.core.io import read_json

__all__ = ["QUALITY_NOTE", "read_curve", "curve_series", "curve_band"]

QUALITY_NOTE = "quality/v2 without FCD (valid_unique x mol_stable x (1 - mean TV))"


def read_curve(path: Path) -> dict[str, Any] | None:
    """``curve.json`` as written, or None when absent or unreadable."""
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("points"), list) else None


def curve_series(curve: dict[str, Any], key: str, x: str = "train_seconds"
                 ) -> tuple[list[float], list[float]]:
    """``(xs, ys)`` of metric ``key`` against ``x`` (``train_seconds``, ``flops`` or
    ``step``); points where the metric is not finite are left out."""
    xs, ys = [], []
    for p in curve.get("points", []):
        v = p.get("values", {}).get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(float(p[x]))
            ys.append(float(v))
    return xs, ys


def curve_band(curve: dict[str, Any], key: str, x: str = "train_seconds"
               ) -> tuple[list[float], list[float], list[float]]:
    """``(xs, lows, highs)``: the 95 % interval of metric ``key`` at the points that recorded
    one (curves written before intervals were recorded have none: empty lists)."""
    xs, lows, highs = [], [], []
    for p in curve.get("points", []):
        band = (p.get("intervals") or {}).get(key)
        if isinstance(band, (list, tuple)) and len(band) == 2 and all(
                isinstance(b, (int, float)) and math.isfinite(b) for b in band):
            xs.append(float(p[x]))
            lows.append(float(band[0]))
            highs.append(float(band[1]))
    return xs, lows, highs
