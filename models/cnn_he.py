"""The Hello Edge keyword-spotting CNN for 1x10x49 MFCC inputs.

Two convs with kernel (4, 10), strides (1, 2) then (1, 1), a 128-unit FC, the logits.
Sizes: S 28/30 channels, M 64/48, L 60/76. ``CNN-S`` has no BN (8 sites), ``CNN-S-BN`` BN
(11 sites), ``CNN-S-BN-noNoise`` BN without sites; likewise for M and L.
"""
from .registry import bn_variants, register_family

CHANNELS = {"S": (28, 30), "M": (64, 48), "L": (60, 76)}


def cnn_he_layers(c1, c2):
    return [("conv", c1, (4, 10), (1, 2)), "relu",
            ("conv", c2, (4, 10), (1, 1)), "relu",
            "flatten", ("fc", 128), "relu", "logits"]


CONFS = {}
for _size, (_c1, _c2) in CHANNELS.items():
    CONFS.update(bn_variants(cnn_he_layers(_c1, _c2), plain=f"CNN-{_size}",
                             bn=f"CNN-{_size}-BN", silent=f"CNN-{_size}-BN-noNoise"))

register_family("CNN_HE", CONFS)
