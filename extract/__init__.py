"""Stage one: decoding, faces, audio, pretrained CNNs, and the batched extraction runner."""
