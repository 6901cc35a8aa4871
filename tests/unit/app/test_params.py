from molt.config import load_config
from molt.methods import count_parameters
from molt.model import build_model
from molt.app.params import count_preset


def test_meta_device_count_equals_a_real_build():
    count = count_preset("ave_molt_tiny")
    model = build_model(load_config("ave_molt_tiny"), {"num_classes": 28})
    trainable, total = count_parameters(model)
    assert (count.trainable, count.total) == (trainable, total)
    assert count.method_params == count_parameters(model.method)[0]
