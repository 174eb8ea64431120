"""Stage-two model zoo: one small file per temporal module, encoder, fusion and model.

Build models through ``avemo.fusion.registry.MODELS`` (call ``registry.load_all()`` first).
Parameter counts of JCA and LFAN versus the reference code: ``PARAMS.md`` in this folder.
"""
