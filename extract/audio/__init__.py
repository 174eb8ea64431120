"""Stage-one audio: decoding, spectrogram front-ends, audio-CNN embeddings (speech_embedding,
VGGish, PANNs CNN14, SSL encoders). Every module here is imported by ``registry.load_all``: a
feature set (``@FEATURE_SETS.register``) or a building block (``@AUDIO.register``) registers
in the module that defines it, so a new one is one file here."""
