import pytest
from torch import nn

from shrink.errors import SelectorError
from shrink.select import Selector, select_modules


def _model():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 8), nn.Linear(8, 2))


def test_default_selects_linear_and_conv():
    assert list(select_modules(_model())) == ["0", "3", "4"]


def test_regex_type_and_ignore():
    m = _model()
    assert list(select_modules(m, Selector(include=("re:[34]",)))) == ["3", "4"]
    assert list(select_modules(m, Selector(include=("type:Linear",), ignore=("4",)))) == ["3"]
    assert list(select_modules(m, Selector(types=("Conv2d",)))) == ["0"]


def test_selector_matching_nothing_is_an_error():
    with pytest.raises(SelectorError, match="matched no layer") as err:
        select_modules(_model(), Selector(include=("re:encoder.*",)), where="stage 2.selector")
    assert "its layers with weights: Linear x2, Conv2d x1" in str(err.value)  # what it could have chosen
    with pytest.raises(SelectorError, match="holds no layer with weights"):
        select_modules(nn.Sequential(nn.ReLU(), nn.Identity()))


def test_exact_name_typo_is_an_error():
    with pytest.raises(SelectorError, match="no module named '7'"):
        select_modules(_model(), Selector(ignore=("7",)))


def test_unknown_type_name_is_an_error():
    with pytest.raises(SelectorError, match="unknown module type 'Lineer'"):
        select_modules(_model(), Selector(types=("Lineer",)))


def test_a_bare_layer_model_gets_a_hint():
    with pytest.raises(SelectorError, match="the model itself is a single Linear: wrap it"):
        select_modules(nn.Linear(3, 3))
