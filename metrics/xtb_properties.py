"""Electronic properties of molecules from one GFN2-xTB single point (``tblite``).

A physics-based second opinion next to the learned property predictor of the conditional
protocol: HOMO, LUMO and gap (Ha) and the dipole moment (D) of the neutral molecule at its
given geometry (no relaxation). GFN2-xTB is a semi-empirical tight-binding method, not
B3LYP: its orbital energies differ from QM9's DFT values by a large, roughly linear offset,
so the caller calibrates against QM9 molecules first (:func:`fit_calibration`).

Spin: molecules with an odd electron count are computed with one unpaired electron
(``uhf=1``). Restricted occupations: HOMO is orbital ``ceil(n_el / 2) - 1`` of the valence
electrons xTB counts (the occupation sum), LUMO the next one. A molecule whose SCF fails is
NaN in every column.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["BOHR_PER_ANGSTROM", "DEBYE_PER_AU", "XTB_PROPERTIES", "xtb_properties",
           "xtb_properties_many", "fit_calibration", "apply_calibration"]

BOHR_PER_ANGSTROM = 1.0 / 0.529177210903
#: Debye per atomic unit of dipole (e * Bohr)
DEBYE_PER_AU = 2.541746473
#: columns of :func:`xtb_properties_many`, with their units
XTB_PROPERTIES = (("homo", "Ha"), ("lumo", "Ha"), ("gap", "Ha"), ("mu", "D"))


def xtb_properties(numbers: Sequence[int], pos: np.ndarray) -> dict[str, float]:
    """``{"homo", "lumo", "gap"}`` (Ha) and ``"mu"`` (D) of one neutral molecule.

    Args:
        numbers: [n] atomic numbers; pos: [n, 3] coordinates in Å.
    """
    from tblite.interface import Calculator

    z = np.asarray(numbers, np.int64)
    nan = {k: math.nan for k, _ in XTB_PROPERTIES}
    if len(z) == 0:
        return nan
    try:
        calc = Calculator("GFN2-xTB", z, np.asarray(pos, np.float64) * BOHR_PER_ANGSTROM,
                          uhf=int(z.sum()) % 2)
        calc.set("verbosity", 0)
        res = calc.singlepoint()
    except RuntimeError:       # SCF not converged, bad geometry
        return nan
    eps = np.asarray(res.get("orbital-energies"), np.float64)
    n_el = float(np.asarray(res.get("orbital-occupations")).sum())
    homo = int(math.ceil(round(n_el) / 2)) - 1
    if homo < 0 or homo + 1 >= len(eps):
        return nan
    dipole = np.asarray(res.get("dipole"), np.float64)
    return {"homo": float(eps[homo]), "lumo": float(eps[homo + 1]),
            "gap": float(eps[homo + 1] - eps[homo]),
            "mu": float(np.linalg.norm(dipole) * DEBYE_PER_AU)}


def xtb_properties_many(numbers: np.ndarray, pos: np.ndarray, atom_ptr: np.ndarray) -> np.ndarray:
    """``[M, 4]`` (homo, lumo, gap, mu) for M molecules in flat arrays (``atom_ptr: [M + 1]``
    offsets, positions in Å). One single point per molecule (~1-10 ms each for QM9 sizes)."""
    out = np.full((len(atom_ptr) - 1, len(XTB_PROPERTIES)), np.nan)
    for m in range(len(atom_ptr) - 1):
        a, b = atom_ptr[m], atom_ptr[m + 1]
        props = xtb_properties(numbers[a:b], pos[a:b])
        out[m] = [props[k] for k, _ in XTB_PROPERTIES]
    return out


def fit_calibration(xtb: np.ndarray, dft: np.ndarray) -> dict[str, float]:
    """Least-squares ``dft ~ slope * xtb + intercept`` over molecules where both are finite,
    plus the plain mean offset and the MAEs before/after (units of the inputs)."""
    xtb, dft = np.asarray(xtb, np.float64), np.asarray(dft, np.float64)
    ok = np.isfinite(xtb) & np.isfinite(dft)
    if ok.sum() < 3:
        raise ValueError(f"fit_calibration: {int(ok.sum())} finite pairs; need at least 3")
    slope, intercept = np.polyfit(xtb[ok], dft[ok], 1)
    fitted = slope * xtb[ok] + intercept
    return {"slope": float(slope), "intercept": float(intercept),
            "mean_offset": float((dft[ok] - xtb[ok]).mean()),
            "mae_raw": float(np.abs(dft[ok] - xtb[ok]).mean()),
            "mae_offset": float(np.abs(dft[ok] - xtb[ok] - (dft[ok] - xtb[ok]).mean()).mean()),
            "mae_linear": float(np.abs(dft[ok] - fitted).mean()),
            "molecules": int(ok.sum()), "failed": int((~ok).sum())}


def apply_calibration(xtb: np.ndarray, calibration: dict[str, float]) -> np.ndarray:
    """xTB values mapped onto the DFT scale with a :func:`fit_calibration` result."""
    return calibration["slope"] * np.asarray(xtb, np.float64) + calibration["intercept"]
