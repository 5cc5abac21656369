"""The MindSpore port against timm's PyTorch GhostNet(V2), end to end.

For each width: a timm model made to behave like a trained network
(reference.realistic_timm_model), saved like the official release, converted
with convert_weights.py, loaded into the port; logits compared in eval mode
(GRAPH_MODE) on real photographs at PARITY_INPUTS. Then the port's weights go
back to timm through .safetensors.
"""
import mindspore as ms
import numpy as np
import pytest

from reference import (PARITY_INPUTS, PARITY_TOLERANCE, TIMM_MODELS, ParityCase, photo_spread,
                       timm_logits)

# A reference whose logits barely depend on the input would let a wrong port
# pass: two different photographs must move some logit by more than this
# fraction of the largest logit.
MIN_PHOTO_SPREAD = 0.05


@pytest.fixture(scope="module", autouse=True)
def graph_mode():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)


@pytest.fixture(scope="module", params=TIMM_MODELS)
def case(request, tmp_path_factory):
    name = request.param
    # Half the official files are wrapped in {'state_dict': ...}: cover both.
    wrapped = TIMM_MODELS.index(name) % 2 == 0
    return ParityCase(name, tmp_path_factory.mktemp(name), wrapped=wrapped)


def test_reference_depends_on_the_photo(case):
    reference, port = case.logits("224x224")
    assert photo_spread(reference) > MIN_PHOTO_SPREAD, (
        f"{case.name}: the reference's logits barely change between photographs "
        f"(spread {photo_spread(reference):.3f}); the parity test would be blind")
    assert photo_spread(port) > MIN_PHOTO_SPREAD


@pytest.mark.parametrize("input_name", list(PARITY_INPUTS))
def test_logits_match_timm(case, input_name):
    reference, port = case.logits(input_name)
    assert port.shape == reference.shape
    result = case.parity(input_name)
    assert result["relative"] <= PARITY_TOLERANCE, (
        f"{case.name} at {input_name}: max |diff| {result['max_abs_diff']:.3g} is "
        f"{result['relative']:.2e} of the largest logit {result['max_abs_logit']:.3g} "
        f"(tolerance {PARITY_TOLERANCE:g})")


def test_round_trip_to_timm(case):
    timm_model = case.round_trip()
    images = case.images("224x224")
    round_trip = timm_logits(timm_model, images)
    reference, port = case.logits("224x224")
    # The weights survive .pth -> .ckpt -> .safetensors bit for bit ...
    np.testing.assert_array_equal(round_trip, reference)
    # ... so timm with the port's weights agrees with the port.
    relative = np.abs(round_trip - port).max() / np.abs(round_trip).max()
    assert relative <= PARITY_TOLERANCE
