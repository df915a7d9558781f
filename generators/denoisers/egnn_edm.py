"""``egnn_edm``: the ``egnn`` denoiser with EDM's released QM9 settings as defaults.

Same network and parameters as ``egnn`` (:class:`harness.core.nn.DenseEGNN`); only the
defaults differ, set to what EDM's ``outputs/edm_qm9/args.pickle`` records and what its code
does with them (Hoogeboom et al., 2022, github.com/ehoogeboom/e3_diffusion_for_molecules):

========================  ==========  ==============================================
option                    ``egnn``    ``egnn_edm`` (EDM argument)
========================  ==========  ==============================================
hidden / layers           256 / 9     256 / 9 (``nf`` / ``n_layers``)
sublayers                 2           1 (``inv_sublayers``)
coords_range_split        True        False (every block gets the full ``coords_range``)
agg_norm                  1           1 (``normalization_factor``, aggregation ``sum``)
norm_constant             1           1 (``norm_constant``)
sin_embedding             False       False (``sin_embedding``)
zero_mean_velocity        False       True (EDM's dynamics removes the mean of ``vel``)
========================  ==========  ==============================================

Time enters as one extra node feature ``t / T`` (EDM's ``condition_time``), attention and
tanh coordinate updates are on in both. EDM's weights load through
``harness.importers.edm_weights.edm_to_harness_state_dict``.
"""
from __future__ import annotations

from harness.core.registry import DENOISERS
from harness.core.types import LatentSpec

from .egnn import EGNNDenoiser

__all__ = ["EGNNEDMDenoiser"]


@DENOISERS.register("egnn_edm")
class EGNNEDMDenoiser(EGNNDenoiser):
    """``egnn`` with EDM's QM9 defaults (table in the module docstring); any option of
    ``egnn`` can still be given."""

    kinds = ("per_atom",)

    @staticmethod
    def test_options() -> dict:
        """Small sizes for conformance checks."""
        return {"hidden": 16, "layers": 2}

    def __init__(self, spec: LatentSpec, context_dim: int = 0, hidden: int = 256,
                 layers: int = 9, sublayers: int = 1, attention: bool = True,
                 tanh: bool = True, coords_range: float = 15.0, norm_constant: float = 1.0,
                 agg_norm: float = 1.0, group_size: int = 8, checkpoint: bool = False,
                 coords_range_split: bool = False, sin_embedding: bool = False,
                 zero_mean_velocity: bool = True, layout: str = "pairs"):
        super().__init__(spec, context_dim, hidden=hidden, layers=layers, sublayers=sublayers,
                         attention=attention, tanh=tanh, coords_range=coords_range,
                         norm_constant=norm_constant, agg_norm=agg_norm,
                         group_size=group_size, checkpoint=checkpoint,
                         coords_range_split=coords_range_split, sin_embedding=sin_embedding,
                         zero_mean_velocity=zero_mean_velocity, layout=layout)
