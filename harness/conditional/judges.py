"""Two judges for conditional generation: one set of molecules scored by property
predictors of different families, and the rows that beat a judge on its own ground.

A generator conditioned on a property is scored by a learned predictor (the *judge*), so it
can lower its MAE by producing molecules the judge mispredicts in the requested direction
rather than molecules with the requested property. Two defences (issue #24):

* **two judges of different families** (``conditional.judges``: ``egnn``, EDM's evaluator,
  and ``schnet``, continuous-filter convolutions on distances), trained on the same ``Da``
  half through the same code and cache (:func:`harness.conditional.protocol.get_predictor`);
  every table reports both;
* **the fitted-judge flag**: a judge's MAE on *real* molecules (its own MAE on ``Db``, the
  QM9 row) is the best MAE molecules that truly carry the requested values can score under
  it; a row whose MAE under a judge falls below that judge's own ``Db`` error is flagged
  (:data:`FLAG`, :data:`FLAG_TEXT`).

A judged record is the primary judge's :func:`~harness.conditional.protocol.evaluate_predictions`
record with ``judges`` (the other judges' records, by family) and ``fitted_judges`` (the
families whose flag is raised). Units: report units (EDM's; meV for orbital energies).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["FLAG", "FLAG_TEXT", "evaluate_judged", "fitted_judges", "get_judges", "judge_records"]

FLAG = "⚠"
FLAG_TEXT = ("below the judge's error on real molecules: the judge is being fitted, "
             "not the property")


def get_judges(prop: str, families: Sequence[str], dataset=None, size: str = "cpu",
               overrides: dict[str, Any] | None = None, progress: bool = False,
               cache_dir=None) -> dict[str, Any]:
    """``family -> TrainedPredictor`` for ``prop``, in the order given (the first is the
    primary judge); each cached or trained on ``Da`` like EDM's evaluator."""
    from harness.conditional.protocol import get_predictor

    if not families:
        raise ValueError("get_judges: name at least one predictor family")
    return {f: get_predictor(prop, dataset=dataset, size=size, overrides=overrides,
                             cache_dir=cache_dir, progress=progress, family=f) for f in families}


def judge_records(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``family -> record`` of a judged record (the primary first; a record from before
    there were two judges is its EGNN's alone)."""
    primary = record.get("predictor", {}).get("family", "egnn")
    return {primary: record, **record.get("judges", {})}


def fitted_judges(record: dict[str, Any]) -> list[str]:
    """The families under which ``record``'s MAE lies below that judge's own MAE on real
    ``Db`` molecules (its QM9 baseline): the flag of this module's doc."""
    out = []
    for family, rec in judge_records(record).items():
        mae, own = rec.get("report", {}).get("mae"), rec.get("baselines", {}).get("qm9")
        if mae is not None and own is not None and np.isfinite(mae) and mae < own:
            out.append(family)
    return out


def evaluate_judged(batch, targets, judges: dict[str, Any], groups=None) -> dict[str, Any]:
    """Score ``batch`` (a ``MolBatch`` in target order) under every judge: the primary
    judge's record with ``judges`` and ``fitted_judges`` added (EDM validity computed once).

    Args:
        targets: ``[B]`` requested values (dataset units) or ``ConditionalTargets``.
        judges: ``family -> TrainedPredictor`` (:func:`get_judges`).
    """
    from harness.conditional.protocol import (
        ConditionalTargets,
        edm_validity,
        evaluate_predictions,
        predict_molecules,
    )

    if isinstance(targets, ConditionalTargets):
        groups = targets.groups if groups is None else groups
        targets = targets.values
    targets = np.asarray(targets, float)
    valid = edm_validity(batch)
    records = {f: evaluate_predictions(predict_molecules(p, batch), targets, p, groups, valid)
               for f, p in judges.items()}
    primary, *others = records
    out = {**records[primary], "judges": {f: records[f] for f in others}}
    out["fitted_judges"] = fitted_judges(out)
    return out
