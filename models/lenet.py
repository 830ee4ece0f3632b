"""LeNet5: two 5x5 convs (6, 16 channels, no padding) with max-pool 2, then FC 120, 84.

Conf names: ``LeNet5`` (no BN, 12 sites), ``LeNet5-BN`` (16 sites), ``LeNet5-BN-noNoise``
(BN without sites, 12 sites).
"""
from .registry import bn_variants, register_family

LENET5 = [("conv", 6, 5), "relu", ("maxpool", 2),
          ("conv", 16, 5), "relu", ("maxpool", 2),
          "flatten", ("fc", 120), "relu", ("fc", 84), "relu", "logits"]

register_family("LeNet", bn_variants(LENET5, plain="LeNet5", bn="LeNet5-BN",
                                     silent="LeNet5-BN-noNoise"))
