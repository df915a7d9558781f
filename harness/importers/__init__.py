"""Importers of models trained by other codebases into harness run directories.

* ``edm`` (``edm.py``): EDM's QM9 checkpoints (``args.pickle`` + ``generative_model*.npy``)
  -> a run directory with the ``raw`` space and a diffusion generator (``egnn_edm``).
* ``safe_pickle.py``: the restricted unpickler that reads EDM's ``args.pickle`` without
  running code; ``edm_weights.py``: EDM state-dict names -> harness parameters;
  ``cli.py``: the ``l3dg import`` sub-command (``add_parser``, ``cmd_import``).
"""
