"""avemo: audio-video emotion recognition with cached features."""

__version__ = "0.1.0"
