"""GFN2-xTB single points and local relaxations through ``tblite`` (ground floor: used by
the ``xtb`` metric family and by dataset builders that optimise conformers with xTB).

Units: positions in Å at this interface (tblite works in Bohr; converted here), energies in
Hartree, gradients in Hartree/Bohr. :data:`HARTREE_KCAL` converts energies to kcal/mol.

* :func:`screen` says why a molecule cannot be computed (element beyond Z = 86, odd electron
  count = radical, net charge when charged molecules are not allowed) -- callers count and
  name those molecules instead of dropping them.
* :func:`singlepoint` -- energy and gradient at the given geometry.
* :func:`relax` -- local minimisation over Cartesian coordinates: L-BFGS (two-loop
  recursion, memory ``memory``) whose step is capped at ``max_step`` Å for the atom that
  moves most; a step that raises the energy is halved (up to 5 times) and the curvature
  history reset; converged when the largest atomic gradient norm is below ``fmax``
  Hartree/Bohr (1e-3 Eh/a0 ~ 0.05 eV/Å, ASE's usual ``fmax``). Every SCF after the first
  restarts from the previous wavefunction (tblite ``Result`` reuse), which is what makes a
  relaxation affordable (~10-80 ms per gradient for 20-50 atoms on one core).
* :func:`kabsch_rmsd` -- RMSD after optimal superposition, batched over padded molecules.

tblite's own printout goes to a logger this module collects (``verbosity`` 0, no colour):
nothing reaches stdout. The tblite wheel is single-threaded (reference BLAS, no OpenMP).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

BOHR_ANGSTROM = 0.529177210903          # Å per Bohr (CODATA 2018)
HARTREE_KCAL = 627.509474               # kcal/mol per Hartree
MAX_ATOMIC_NUMBER = 86                  # GFN2-xTB is parametrised for Z = 1..86
METHOD = "GFN2-xTB"


class XtbError(RuntimeError):
    """tblite could not compute a molecule (SCF failure, non-finite energy, bad input)."""


def screen(numbers: Sequence[int], charge: int = 0, allow_charged: bool = False) -> str | None:
    """Why xTB is not run on a molecule, or None when it can be.

    Args:
        numbers: [n] atomic numbers.
        charge: net formal charge (e).
        allow_charged: compute charged molecules with that charge (else they are refused).
    """
    z = np.asarray(numbers, np.int64)
    if len(z) == 0:
        return "no atoms"
    if (z < 1).any() or (z > MAX_ATOMIC_NUMBER).any():
        return f"element with Z = {int(z[(z < 1) | (z > MAX_ATOMIC_NUMBER)][0])} is outside GFN2-xTB (1..86)"
    if charge and not allow_charged:
        return f"charged (net formal charge {charge:+d})"
    # core shells hold an even number of electrons, so the parity of sum(Z) - charge is the
    # parity of the valence electrons tblite treats
    if (int(z.sum()) - int(charge)) % 2:
        return "odd electron count (radical)"
    return None


class _Calculator:
    """One tblite calculator for a fixed molecule; positions in Å."""

    def __init__(self, numbers: np.ndarray, pos: np.ndarray, charge: int, accuracy: float,
                 max_iter: int):
        from tblite.interface import Calculator

        self.messages: list[str] = []
        try:
            self.calc = Calculator(METHOD, np.asarray(numbers, np.int64),
                                   np.asarray(pos, np.float64) / BOHR_ANGSTROM,
                                   charge=float(charge), uhf=0,
                                   logger=self.messages.append, color=False)
        except Exception as err:  # tblite raises TBLiteValueError / RuntimeError
            raise XtbError(f"tblite rejected the structure ({err})") from None
        self.calc.set("verbosity", 0)
        self.calc.set("accuracy", float(accuracy))
        self.calc.set("max-iter", int(max_iter))
        self.result = None

    def __call__(self, pos: np.ndarray) -> tuple[float, np.ndarray]:
        """(energy Ha, gradient [n, 3] Ha/Bohr) at ``pos`` (Å)."""
        try:
            if self.result is not None:
                self.calc.update(np.asarray(pos, np.float64) / BOHR_ANGSTROM)
                self.result = self.calc.singlepoint(self.result)   # restart from last wavefunction
            else:
                self.result = self.calc.singlepoint()
        except Exception as err:
            raise XtbError(f"SCF failed ({str(err).strip() or type(err).__name__})") from None
        energy = float(self.result.get("energy"))
        grad = np.asarray(self.result.get("gradient"), np.float64)
        if not (np.isfinite(energy) and np.isfinite(grad).all()):
            raise XtbError("non-finite energy or gradient")
        return energy, grad


def singlepoint(numbers: Sequence[int], pos: np.ndarray, charge: int = 0, accuracy: float = 1.0,
                max_iter: int = 250) -> tuple[float, np.ndarray]:
    """GFN2-xTB energy (Hartree) and gradient ``[n, 3]`` (Hartree/Bohr) at ``pos`` ``[n, 3]`` (Å).
    Raises :class:`XtbError`."""
    return _Calculator(np.asarray(numbers), pos, charge, accuracy, max_iter)(pos)


@dataclass
class Relaxation:
    """Result of :func:`relax`.

    Attributes:
        energy_start / energy: energy at the input / final geometry (Hartree).
        pos: [n, 3] final geometry (Å).
        steps: accepted optimiser steps; evaluations: SCF calculations (incl. rejected trials).
        converged: largest atomic gradient norm fell below ``fmax``.
        grad_max: largest atomic gradient norm at the final geometry (Hartree/Bohr).
    """

    energy_start: float
    energy: float
    pos: np.ndarray
    steps: int
    evaluations: int
    converged: bool
    grad_max: float

    @property
    def delta_e_kcal(self) -> float:
        """Relaxed minus starting energy, kcal/mol (<= ~0)."""
        return (self.energy - self.energy_start) * HARTREE_KCAL


def _lbfgs_direction(g: np.ndarray, s_hist: list, y_hist: list, h0: float) -> np.ndarray:
    """-H g by the L-BFGS two-loop recursion (flat vectors)."""
    q = g.copy()
    alphas = []
    for s, y in zip(reversed(s_hist), reversed(y_hist)):
        rho = 1.0 / float(y @ s)
        a = rho * float(s @ q)
        q -= a * y
        alphas.append((a, rho, s, y))
    gamma = float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1]) if s_hist else h0
    r = gamma * q
    for a, rho, s, y in reversed(alphas):
        r += s * (a - rho * float(y @ r))
    return -r


def relax(numbers: Sequence[int], pos: np.ndarray, charge: int = 0, fmax: float = 1e-3,
          max_steps: int = 500, max_step: float = 0.2, memory: int = 20, accuracy: float = 1.0,
          max_iter: int = 250) -> Relaxation:
    """Locally minimise the GFN2-xTB energy from ``pos`` (Å); see the module doc.

    Args:
        fmax: convergence threshold on the largest atomic gradient norm (Hartree/Bohr).
        max_steps: accepted-step budget.
        max_step: largest displacement of any atom in one step (Å).
        memory: L-BFGS curvature pairs kept.
    Raises:
        XtbError: the SCF failed at the start or during the relaxation.
    """
    numbers = np.asarray(numbers, np.int64)
    x = np.asarray(pos, np.float64).reshape(-1).copy()         # Å, flat [3n]
    calc = _Calculator(numbers, x.reshape(-1, 3), charge, accuracy, max_iter)
    energy, grad = calc(x.reshape(-1, 3))
    g = grad.reshape(-1) / BOHR_ANGSTROM                        # Ha/Å
    e_start = energy
    # initial inverse Hessian ~ 1 / (70 eV/Å^2), ASE's LBFGS default stiffness, in Ha/Å^2
    h0 = 1.0 / (70.0 / 27.211386245988)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    evaluations, steps = 1, 0
    fmax_a = fmax / BOHR_ANGSTROM                              # Ha/Å
    while True:
        gmax = float(np.sqrt((g.reshape(-1, 3) ** 2).sum(1)).max())
        if gmax < fmax_a or steps >= max_steps:
            break
        p = _lbfgs_direction(g, s_hist, y_hist, h0)
        if float(p @ g) >= 0:                                   # not a descent direction: reset
            s_hist.clear(), y_hist.clear()
            p = -h0 * g
        longest = float(np.sqrt((p.reshape(-1, 3) ** 2).sum(1)).max())
        if longest > max_step:
            p *= max_step / longest
        for _ in range(6):
            x_new = x + p
            e_new, grad_new = calc(x_new.reshape(-1, 3))
            evaluations += 1
            if e_new <= energy + 1e-6:                          # accept (tiny SCF noise allowed)
                break
            p *= 0.5
            s_hist.clear(), y_hist.clear()
        g_new = grad_new.reshape(-1) / BOHR_ANGSTROM
        s, y = x_new - x, g_new - g
        if float(s @ y) > 1e-12:                                # keep only positive curvature
            s_hist.append(s), y_hist.append(y)
            if len(s_hist) > memory:
                s_hist.pop(0), y_hist.pop(0)
        x, energy, g = x_new, e_new, g_new
        steps += 1
    gmax = float(np.sqrt((g.reshape(-1, 3) ** 2).sum(1)).max()) * BOHR_ANGSTROM
    return Relaxation(energy_start=e_start, energy=energy, pos=x.reshape(-1, 3), steps=steps,
                      evaluations=evaluations, converged=gmax < fmax, grad_max=gmax)


def kabsch_rmsd(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """RMSD (Å) between ``a`` and ``b`` after the optimal rotation + translation (proper
    rotations only; :func:`harness.core.geometry.kabsch_rmsd`), batched.

    Args:
        a, b: [B, N, 3] (or [N, 3]) coordinates with atoms in the same order.
        mask: [B, N] atoms that count (default all).
    Returns:
        [B] RMSD; NaN for a molecule with no counted atom.
    """
    import torch

    from harness.core.geometry import kabsch_rmsd as _kabsch_rmsd

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.ndim == 2:
        a, b = a[None], b[None]
        mask = None if mask is None else np.asarray(mask)[None]
    m = np.ones(a.shape[:2], bool) if mask is None else np.asarray(mask, bool)
    rmsd = _kabsch_rmsd(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(m)).numpy()
    return np.where(m.sum(1) > 0, rmsd, np.nan)


def tblite_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("tblite")
    except metadata.PackageNotFoundError:
        return "not installed"
