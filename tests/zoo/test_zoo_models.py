import torch

from shrink.eval import accuracy, count_params, predict
from shrink.zoo import digits_split, digits_student, mobilenet_v2, resnet18
from shrink.zoo.minilm import load_sentences


def test_digits_split_is_fixed_and_complete():
    a, b = digits_split(), digits_split()
    sizes = (len(a.train), len(a.val), len(a.test))
    assert sizes == (1257, 180, 360) and sum(sizes) == 1797
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])


def test_digits_teacher_reaches_98_percent(digits_teacher, digits):
    logits, targets = predict(digits_teacher, digits.test)
    assert accuracy(logits, targets) >= 98.0


def test_student_is_at_most_a_quarter_of_the_teacher(digits_teacher):
    assert count_params(digits_student())[0] * 4 <= count_params(digits_teacher)[0]


def test_vision_nets_forward_at_both_resolutions():
    assert resnet18(num_classes=10, small_input=True)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert mobilenet_v2(num_classes=10, small_input=True)(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert mobilenet_v2()(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    r = resnet18()
    assert r(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    assert 11.6e6 < count_params(r)[0] < 11.8e6


def test_corpus_has_500_distinct_sentences():
    sentences = load_sentences()
    assert len(sentences) >= 500
    assert len(set(sentences)) == len(sentences)


def test_digits_calibration_and_example_come_from_train_only():
    from shrink.zoo import digits_data

    split, data = digits_split(), digits_data()
    rows = {tuple(x.flatten().tolist()) for x in split.train.tensors[0]}
    held_out = {tuple(x.flatten().tolist()) for part in (split.val, split.test) for x in part.tensors[0]}
    calib = [tuple(x.flatten().tolist()) for batch, _ in data.calibration for x in batch]
    assert len(calib) == 8 * 32 and set(calib) <= rows  # 8 calibration batches of 32 training images
    assert not set(calib) & held_out - rows  # no image that exists only in val/test is ever calibrated on
    assert tuple(data.example_inputs[0].flatten().tolist()) in rows
