"""Stage-one audio: decoding, spectrogram front-ends, audio-CNN embeddings (speech_embedding,
VGGish, PANNs CNN14). Feature sets register in ``avemo.extract.audio.feature_sets``."""
