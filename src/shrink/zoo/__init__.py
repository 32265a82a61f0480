"""Bundled models and data that work offline: digits CNN teacher/student, ResNet-18 / MobileNetV2-style nets,
the real pretrained all-MiniLM-L6-v2 with the project's sentence corpus, MNIST-1D (generated) with its paper's
four baselines, and the real SmolLM2-135M-Instruct decoder with a text set of English prose and Python code."""

from collections.abc import Callable
from typing import Any

from shrink.zoo.digits import DigitsCNN, DigitsStudent, digits_data, digits_split, digits_student, digits_teacher
from shrink.zoo.mnist1d import mnist1d_arrays, mnist1d_data, mnist1d_split
from shrink.zoo.mnist1d_models import (
    MNIST1D_MODELS,
    Mnist1dCNN,
    Mnist1dGRU,
    Mnist1dLogistic,
    Mnist1dLSTMAttention,
    Mnist1dMLP,
    mnist1d_model,
)
from shrink.zoo.vision import MobileNetV2, ResNet18, mobilenet_v2, resnet18

__all__ = [
    "DigitsCNN",
    "DigitsStudent",
    "digits_data",
    "digits_split",
    "digits_student",
    "digits_teacher",
    "mnist1d_arrays",
    "mnist1d_data",
    "mnist1d_split",
    "mnist1d_model",
    "MNIST1D_MODELS",
    "Mnist1dLogistic",
    "Mnist1dMLP",
    "Mnist1dCNN",
    "Mnist1dGRU",
    "Mnist1dLSTMAttention",
    "ResNet18",
    "MobileNetV2",
    "resnet18",
    "mobilenet_v2",
    "MODELS",
    "DATA",
    "load_minilm",
    "minilm_data",
    "smollm2",
    "tiny_llama",
    "llm_text_data",
]


def load_minilm() -> Any:
    from shrink.zoo.minilm import load_minilm as _load

    return _load()


def minilm_data(**kwargs: Any) -> Any:
    from shrink.zoo.minilm import minilm_data as _data

    return _data(**kwargs)


def smollm2(**kwargs: Any) -> Any:
    """The real SmolLM2-135M-Instruct (LlamaForCausalLM, fp32), offline (:func:`shrink.zoo.llm.load_smollm2`)."""
    from shrink.zoo.llm import load_smollm2

    return load_smollm2(**kwargs)[0]


def tiny_llama(**kwargs: Any) -> Any:
    from shrink.zoo.llm import tiny_llama as _tiny

    return _tiny(**kwargs)


def llm_text_data(**kwargs: Any) -> Any:
    from shrink.zoo.llm import llm_text_data as _data

    return _data(**kwargs)


#: zoo model names usable in recipes -> factory returning a ready model
MODELS: dict[str, Callable[..., Any]] = {
    "digits_cnn": digits_teacher,
    "digits_student": digits_student,
    "resnet18": resnet18,
    "resnet18_cifar": lambda **kw: resnet18(num_classes=10, small_input=True, **kw),
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v2_cifar": lambda **kw: mobilenet_v2(num_classes=10, small_input=True, **kw),
    "minilm": load_minilm,
    "smollm2": smollm2,
    "tiny_llama": tiny_llama,
    **{f"mnist1d_{name}": (lambda name=name, **kw: mnist1d_model(name, **kw)) for name in MNIST1D_MODELS},
}
#: zoo data names usable in recipes -> factory returning a DataBundle
DATA: dict[str, Callable[..., Any]] = {
    "digits": digits_data,
    "minilm": minilm_data,
    "mnist1d": mnist1d_data,
    "llm_text": llm_text_data,
}
