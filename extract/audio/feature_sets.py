"""Registers the audio feature sets (``FEATURE_SETS``) and their building blocks (``AUDIO``).

``FEATURE_SETS``: what ``avemo features -s NAME`` extracts (one HDF5 file each).
``AUDIO``: the front-ends and audio CNNs themselves, for code that wants to reuse them.
The feature-set classes register themselves (``@FEATURE_SETS.register`` in their modules);
importing them here is what registers them.
"""

from __future__ import annotations

from avemo.extract.audio import frontends
from avemo.extract.audio.opensmile_lld import CompareLld, EgemapsLld
from avemo.extract.audio.panns import PannsCnn14, build_cnn14
from avemo.extract.audio.pitch import PitchSwiftF0
from avemo.extract.audio.spectral import LogMel, Mfcc, Spectrogram
from avemo.extract.audio.speech_embedding import SpeechEmbedding, SpeechEmbeddingModel
from avemo.extract.audio.ssl_encoders import SSL_SETS
from avemo.extract.audio.vggish import Vggish, build_vggish
from avemo.extract.audio.windowed import LogMelResNet18, build_audio_resnet18
from avemo.extract.registry import AUDIO

FEATURE_SET_CLASSES = (Spectrogram, LogMel, Mfcc, SpeechEmbedding, Vggish, PannsCnn14, EgemapsLld,
                       CompareLld, PitchSwiftF0, LogMelResNet18, *SSL_SETS)  # registered by their decorators

AUDIO.register("speech_embedding", help="Google speech_embedding ONNX pair (openwakeword 0.4.0)")(
    SpeechEmbeddingModel)
AUDIO.register("vggish", help="VGGish network, [B, 1, 96, 64] -> [B, 128]")(build_vggish)
AUDIO.register("audio_resnet18", help="one-channel ResNet-18, [B, 1, T, 64] -> [B, 512]")(
    build_audio_resnet18)
AUDIO.register("panns_cnn14", help="PANNs CNN14 network, [B, 1, T, 64] -> [B, 2048]")(build_cnn14)

AUDIO.register("stft_magnitude", help="|STFT|, centred frames (numpy)")(frontends.stft_magnitude_np)
AUDIO.register("log_mel", help="natural-log mel power (numpy)")(frontends.log_mel_np)
AUDIO.register("mfcc", help="DCT-II of dB mel power (numpy)")(frontends.mfcc_np)
AUDIO.register("stft_magnitude_torch", help="|STFT| of a padded batch (torch)")(
    frontends.stft_magnitude_torch)
AUDIO.register("mel_power_torch", help="mel power of a padded batch (torch)")(
    frontends.mel_power_torch)
