"""VGG11/13/16/19 as in kuangliu/pytorch-cifar: 3x3 convs (padding 1) and max-pools, then the
logits on the 512 features.

``VGG<n>`` has BN (as kuangliu's), ``VGG<n>-noBN`` none, ``VGG<n>-BN-noNoise`` BN without sites.
``VGG<n>_mnist`` variants drop the last max-pool so that 28x28 inputs end at 1x1x512.
"""
from .registry import bn_variants, register_family

CHANNELS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
         512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}


def vgg_layers(channels):
    layers = []
    for c in channels:
        layers += [("maxpool", 2)] if c == "M" else [("conv", c, 3, 1, 1), "relu"]
    return layers + ["flatten", "logits"]


CONFS = {}
for _depth, _channels in CHANNELS.items():
    for _suffix, _chs in (("", _channels), ("_mnist", _channels[:-1])):
        _name = f"VGG{_depth}{_suffix}"
        CONFS.update(bn_variants(vgg_layers(_chs), plain=f"{_name}-noBN", bn=_name,
                                 silent=f"{_name}-BN-noNoise"))

register_family("VGG", CONFS)
