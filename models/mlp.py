"""MLPs: flatten, then hidden FC layers with ReLU, then the logits.

``RL_<W>`` has BN (the paper's default for MLPs), ``RL_<W>-noBN`` none, ``RL_<W>-BN-noNoise`` BN
without sites. ``TFC`` 64, ``SFC`` 256, ``LFC`` 1024 units in three hidden layers;
``TFC_32/_16/_8`` the same with 32/16/8 units. ``mlp1r`` (no BN) and ``mlp1br`` (BN): hidden
layers of 2048 and 512 units.
"""
from .builder import ModelConf
from .registry import bn_variants, register_family

WIDTHS = {"TFC": 64, "SFC": 256, "LFC": 1024, "TFC_32": 32, "TFC_16": 16, "TFC_8": 8}


def mlp_layers(hidden):
    layers = ["flatten"]
    for width in hidden:
        layers += [("fc", width), "relu"]
    return layers + ["logits"]


CONFS = {}
for _name, _width in WIDTHS.items():
    CONFS.update(bn_variants(mlp_layers([_width] * 3), plain=f"RL_{_name}-noBN",
                             bn=f"RL_{_name}", silent=f"RL_{_name}-BN-noNoise"))
CONFS["mlp1r"] = ModelConf(tuple(mlp_layers([2048, 512])), "none")
CONFS["mlp1br"] = ModelConf(tuple(mlp_layers([2048, 512])), "noisy")

register_family("MLP", CONFS)
