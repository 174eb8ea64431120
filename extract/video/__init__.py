"""Stage one, faces: decode -> detect -> align -> face CNN, batched across frames and clips.

``decode`` streams frames with container timestamps, ``detectors`` find faces and 5 landmarks,
``align`` warps them onto the ArcFace template, ``tracks`` keeps one face per clip,
``pipeline`` runs it all in batches and ``feature_sets`` registers the ``face_*`` sets.
"""
