import pydantic
import pytest
import yaml

from shrink.errors import ConfigError
from shrink.pruning import MagnitudePruning
from shrink.stages import config_from_dict, registered_types
from shrink.train import FineTune


def test_config_round_trips_through_yaml():
    cfg = MagnitudePruning(sparsity=0.8, scope="layer")
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg
    assert again.to_dict()["type"] == "magnitude_pruning"


def test_configs_are_frozen():
    cfg = FineTune(epochs=2)
    with pytest.raises(pydantic.ValidationError):
        cfg.epochs = 3  # type: ignore[misc]
    assert cfg.epochs == 2


def test_unknown_key_names_the_field():
    with pytest.raises(ConfigError, match="unknown field 'sparsityy'"):
        MagnitudePruning(sparsityy=0.5)


def test_wrong_type_names_the_field():
    with pytest.raises(ConfigError, match="field 'sparsity'"):
        config_from_dict({"type": "magnitude_pruning", "sparsity": "lots"}, where="stage 3")


def test_out_of_range_value_is_rejected():
    with pytest.raises(ConfigError, match="sparsity"):
        MagnitudePruning(sparsity=1.5)


def test_unknown_type_lists_known_types():
    with pytest.raises(ConfigError, match="unknown stage type 'magic'.*magnitude_pruning"):
        config_from_dict({"type": "magic"})


def test_registry_contains_foundation_stages():
    types = registered_types()
    assert {"magnitude_pruning", "finetune", "onnx_export"} <= set(types)
    assert types["finetune"].family == "train"
