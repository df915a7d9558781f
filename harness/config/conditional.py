"""``ConditionalConfig``: the ``conditional:`` section of a study config (kept with the
config, apart from the conditional protocol, so that loading a config imports no
predictor or plotting code)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigError

__all__ = ["ConditionalConfig", "JUDGES"]

#: property-predictor families a conditional table is judged by (the names of
#: ``metrics.property_predictor.PREDICTOR_FAMILIES``, repeated so a config loads without torch)
JUDGES = ("egnn", "schnet")


@dataclass
class ConditionalConfig:
    """Settings of a study's conditional stage (the ``conditional:`` section of a preset).

    Attributes:
        property: the property the generator is conditioned on (one of
            ``metrics.conditional.CONDITIONAL_PROPERTIES``); empty = ``generator.context[0]``.
        protocol: ``edm`` (count + value from Db's histograms) or ``ldm`` (in/OOD targets).
        n_samples: molecules scored (``edm``) / in-distribution targets (``ldm``).
        n_ood: targets on each OOD side (``ldm``; default ``n_samples``).
        predictor_size: a key of :data:`PREDICTOR_SIZES`; predictor_options: overrides.
        guidance_scales: CFG scales of the guidance sweep (empty: no sweep).
        atom_count_context: vector-latent generators also see the target's atom count
            (``edm`` targets carry one; per-atom latents get it through their mask), so
            both kinds of space are given what EDM gives its generator.
        count_candidates: K, the latents drawn per target by a vector-latent space that can
            read its atom count from the topology alone (``Space.topology_atom_counts``):
            the first whose count equals the requested one is kept, else the nearest, and
            only that one is decoded (:mod:`harness.conditional.count`). 1 = one draw, no
            selection (the unconditional path's behaviour); ``edm`` targets only.
        judges: the predictor families that score every conditional row (the first is the
            primary judge: ``conditional.json``'s records and the guidance sweep); each is
            trained on ``Da`` through the same code and cache (:data:`JUDGES`;
            :mod:`harness.conditional.judges`).
        relaxed_rows: also score force-field-relaxed copies of every row of a space whose
            molecules carry decoded bonds (the invariant space): MMFF94 on the decoded
            topology, as LDM-3DG's published pipeline scores its decoder's output
            (:mod:`harness.core.forcefield`). They are their own rows, labelled
            ``MMFF-relaxed``, beside the raw rows and never mixed with them; spaces without
            bonds (raw, per_atom) get none.
    """

    property: str = ""          # "" = the generator's (single) context property
    protocol: str = "edm"
    n_samples: int = 1000
    n_ood: int | None = None
    predictor_size: str = "cpu"
    predictor_options: dict[str, Any] = field(default_factory=dict)
    guidance_scales: list[float] = field(default_factory=list)
    atom_count_context: bool = False
    count_candidates: int = 1
    judges: list[str] = field(default_factory=lambda: list(JUDGES))
    relaxed_rows: bool = True

    def __post_init__(self) -> None:
        k = self.count_candidates
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"config key 'conditional.count_candidates' must be an integer "
                              f">= 1, got {k!r}")
        if not isinstance(self.relaxed_rows, bool):
            raise ConfigError(f"config key 'conditional.relaxed_rows' must be true or false, "
                              f"got {self.relaxed_rows!r}")
        judges = list(self.judges)
        if not judges or len(set(judges)) != len(judges) or not set(judges) <= set(JUDGES):
            raise ConfigError(f"config key 'conditional.judges' must list distinct predictor "
                              f"families of {list(JUDGES)}, got {self.judges!r}")
