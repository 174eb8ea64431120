"""Stage-two model zoo: one small file per temporal module, encoder, fusion and model.

Each file is named by the registry its entries join: ``temporal_*.py`` (``TEMPORAL``: sequence
-> per-frame features + pooled vector), ``encoder_*.py`` (``ENCODERS``: per-row input
encoders), ``fusion_*.py`` (``FUSION``: cross-modal fusion of pooled vectors) and
``model_*.py`` (``MODELS``: full models a config's ``model.name`` builds). ``base.py``
(contracts, masks, the ``Head`` every model ends in), ``branch.py`` (encoder + temporal per
modality) and ``dropout.py`` are the shared parts. Every module here is imported by
``registry.load_all`` (``load_plugins``), so a new file needs no other edit.

Build models through ``avemo.fusion.registry.MODELS`` (call ``registry.load_all()`` first).
Parameter counts of JCA and LFAN versus the reference code: ``PARAMS.md`` in this folder.
"""
