"""Physics check of conditional generation: GFN2-xTB instead of the learned predictor.

For the properties a single point gives directly (``homo``, ``lumo``, ``gap``, ``mu``), score
generated molecules with xTB (``metrics/xtb_properties.py``) mapped onto QM9's DFT scale by a
linear calibration measured on QM9 molecules. The calibration's own MAE on those QM9
molecules is the xTB analogue of the table's QM9 lower bound; report both next to the
predictor's MAE. ``alpha`` and ``Cv`` need response / frequency calculations: not covered.
"""
from __future__ import annotations

from typing import Any

import numpy as np

XTB_COMPARABLE = ("homo", "lumo", "gap", "mu")


def _check(prop: str) -> None:
    if prop not in XTB_COMPARABLE:
        raise ValueError(f"xTB check: {prop!r} is not available from a single point; "
                         f"properties: {', '.join(XTB_COMPARABLE)}")


def _xtb_of_batch(batch, prop: str) -> np.ndarray:
    """``[B]`` xTB value of ``prop`` (Ha or D) per molecule of a ``MolBatch`` (NaN where the
    SCF fails or the molecule has no atoms)."""
    from metrics.xtb_properties import XTB_PROPERTIES, xtb_properties_many

    cpu = batch.to("cpu")
    counts = cpu.mask.sum(1).numpy()
    numbers = cpu.numbers.numpy()[cpu.mask.numpy()]       # real atoms are packed first per row
    pos = cpu.pos.double().numpy()[cpu.mask.numpy()]
    ptr = np.concatenate([[0], np.cumsum(counts)])
    col = [k for k, _ in XTB_PROPERTIES].index(prop)
    return xtb_properties_many(numbers, pos, ptr)[:, col]


def xtb_calibration(dataset, prop: str, n: int = 300, split: str = "val", seed: int = 0
                    ) -> dict[str, Any]:
    """Fit DFT ~ slope * xTB + intercept for ``prop`` on ``n`` random molecules of
    ``dataset``'s ``split`` (QM9-valid by default: neither half of the training split).

    Returns:
        :func:`metrics.xtb_properties.fit_calibration`'s dict plus ``property`` and
        ``split``; MAEs in the dataset's units.
    """
    from metrics.xtb_properties import fit_calibration

    _check(prop)
    part = dataset.split(split)
    pick = np.sort(np.random.default_rng(seed).choice(len(part), min(n, len(part)), replace=False))
    batch = part.batch(pick)
    dft = np.asarray(part.packed.props[pick, part.prop_names.index(prop)], np.float64)
    return {**fit_calibration(_xtb_of_batch(batch, prop), dft), "property": prop, "split": split}


def xtb_check(batch, targets, prop: str, calibration: dict[str, Any]) -> dict[str, Any]:
    """MAE between calibrated xTB values of generated molecules and their requested values
    (``targets``: ``[B]`` dataset units), in report units, with the calibration's own MAE
    on QM9 (``qm9_mae``) beside it."""
    from metrics.conditional import score_conditional, to_report_units
    from metrics.xtb_properties import apply_calibration

    _check(prop)
    if calibration.get("property") != prop:
        raise ValueError(f"calibration is for {calibration.get('property')!r}, not {prop!r}")
    values = apply_calibration(_xtb_of_batch(batch, prop), calibration)
    score = score_conditional(values, np.asarray(targets, np.float64))
    return {"property": prop, "mae": to_report_units(prop, score["mae"]),
            "n": score["n"], "n_unscorable": score["n_unscorable"],
            "qm9_mae": to_report_units(prop, calibration["mae_linear"]),
            "calibration": calibration, "method": "GFN2-xTB single point (tblite), linear "
                                                  "calibration to DFT on QM9"}
