"""The dataset registry: names, aliases, errors and argument checks (no files needed)."""
import pytest

import data
from data import BaseDataset, get_dataset, register_dataset
from data.registry import ALIASES, DATASETS, resolve_name

EXPECTED = {"MNIST": ((1, 28, 28), 10), "FashionMNIST": ((1, 28, 28), 10),
            "CIFAR10": ((3, 32, 32), 10), "SVHN": ((3, 32, 32), 10), "GSC2": ((1, 10, 49), 12)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_paper_dataset_is_registered_with_its_shape_and_classes(name, tmp_path):
    ds = get_dataset(name, tmp_path, download=False)  # creating one reads nothing
    assert ds.name == name
    assert (ds.dims, ds.num_classes) == EXPECTED[name]
    assert len(ds.classes) == ds.num_classes
    assert isinstance(ds, BaseDataset)


@pytest.mark.parametrize("alias", ["GSC2_TF", "GSC2_PyTorch", "gsc2", "fashionmnist"])
def test_aliases_and_other_letter_cases_resolve_to_the_canonical_name(alias, tmp_path):
    assert get_dataset(alias, tmp_path).name == resolve_name(alias)
    assert resolve_name(alias) in DATASETS


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        get_dataset("ImageNet", "/tmp")
    for name in list(EXPECTED) + ["GSC2_TF", "GSC2_PyTorch"]:
        assert name in str(info.value)


def test_registering_a_name_twice_fails():
    with pytest.raises(ValueError, match="twice"):
        register_dataset("MNIST")(type("Other", (), {}))
    assert DATASETS["MNIST"] is data.images.MNIST and "GSC2_TF" in ALIASES


@pytest.mark.parametrize("kw,match", [({"batch_size": 0}, "batch_size"),
                                      ({"batch_size": 1.5}, "batch_size"),
                                      ({"val_split": 1.0}, "val_split"),
                                      ({"val_split": 0}, "val_split"),
                                      ({"num_workers": -1}, "num_workers"),
                                      ({"eval_batch_size": -3}, "eval_batch_size")])
def test_invalid_arguments_fail_naming_the_argument(kw, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        get_dataset("MNIST", tmp_path, **kw)


def test_unknown_keyword_argument_fails(tmp_path):
    with pytest.raises(TypeError, match="colour"):
        get_dataset("CIFAR10", tmp_path, colour=True)
