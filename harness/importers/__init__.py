"""Importers of models trained by other codebases into harness run directories.

* ``edm`` (``edm.py``): EDM's QM9 checkpoints (``args.pickle`` + ``generative_model*.npy``)
  -> a run directory with the ``raw`` space and a diffusion generator (``egnn_edm``).
* ``geoldm`` (``geoldm.py``): GeoLDM's QM9 checkpoints (same layout) -> a run directory with
  the ``per_atom`` space (``autoencoder: geoldm``) and ``egnn_edm`` on its latent.
* ``safe_pickle.py``: the restricted unpickler that reads the ``args.pickle`` files without
  running code; ``edm_weights.py`` / ``geoldm_weights.py``: state-dict names -> harness
  parameters; ``cli.py``: the ``l3dg import`` sub-command (``add_parser``, ``cmd_import``).
"""
