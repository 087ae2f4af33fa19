"""Open Inference Protocol v2, driven by NVIDIA's own client (tritonclient[http]), JSON and binary."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from training.data import MnistArrays

from .harness import DEFAULT_VERSION, RunningServer


@pytest.fixture(scope="module")
def client(server: RunningServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{server.port}")


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mnist") and client.is_model_ready("mnist", DEFAULT_VERSION)
    assert not client.is_model_ready("mnist", str(int(DEFAULT_VERSION) + 1))
    server_metadata = client.get_server_metadata()
    assert (
        server_metadata["name"] == "mnist-serving" and "binary_tensor_data" in server_metadata["extensions"]
    )
    metadata = client.get_model_metadata("mnist", DEFAULT_VERSION)
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "UINT8", "shape": [-1, 1, 28, 28]}]
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert metadata["parameters"]["provider"] == "CPUExecutionProvider"


@pytest.mark.parametrize("binary_input", [False, True])
@pytest.mark.parametrize("binary_output", [False, True])
@pytest.mark.parametrize("datatype,shape", [("UINT8", (1, 28, 28)), ("FP32", (784,))])
def test_infer_json_and_binary(
    client: triton.InferenceServerClient,
    mnist: MnistArrays,
    binary_input: bool,
    binary_output: bool,
    datatype: str,
    shape: tuple,
) -> None:
    images = mnist.test_images[:8].numpy()
    labels = mnist.test_labels[:8].numpy()
    tensor = images.reshape(8, *shape).astype(np.uint8 if datatype == "UINT8" else np.float32)
    infer_input = triton.InferInput("pixels", list(tensor.shape), datatype)
    infer_input.set_data_from_numpy(tensor, binary_data=binary_input)
    output = triton.InferRequestedOutput("probabilities", binary_data=binary_output)
    result = client.infer(
        "mnist", [infer_input], model_version=DEFAULT_VERSION, outputs=[output], request_id="req-7"
    )
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (8, 10) and probabilities.dtype == np.float32
    assert (probabilities.argmax(1) == labels).mean() >= 7 / 8
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
    response = result.get_response()
    assert (
        response["model_name"] == "mnist"
        and response["model_version"] == DEFAULT_VERSION
        and response["id"] == "req-7"
    )


def test_v2_and_predict_give_identical_probabilities(
    client: triton.InferenceServerClient, server: RunningServer, mnist: MnistArrays
) -> None:
    images = mnist.test_images[:4].numpy()
    infer_input = triton.InferInput("pixels", [4, 1, 28, 28], "UINT8")
    infer_input.set_data_from_numpy(images.reshape(4, 1, 28, 28))
    v2 = client.infer("mnist", [infer_input]).as_numpy("probabilities")
    predict = server.post_json("/predict", {"pixels": images.tolist()}).json()["predictions"]
    np.testing.assert_array_equal(v2, np.array([p["probabilities"] for p in predict], np.float32))


def test_v2_errors_reach_the_client_as_errors(client: triton.InferenceServerClient) -> None:
    wrong_name = triton.InferInput("image", [1, 784], "UINT8")
    wrong_name.set_data_from_numpy(np.zeros((1, 784), np.uint8))
    with pytest.raises(InferenceServerException, match="unknown input"):
        client.infer("mnist", [wrong_name])
    wrong_type = triton.InferInput("pixels", [1, 784], "INT64")
    wrong_type.set_data_from_numpy(np.zeros((1, 784), np.int64))
    with pytest.raises(InferenceServerException, match="not supported"):
        client.infer("mnist", [wrong_type])
    wrong_shape = triton.InferInput("pixels", [1, 100], "UINT8")
    wrong_shape.set_data_from_numpy(np.zeros((1, 100), np.uint8))
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer("mnist", [wrong_shape])
    with pytest.raises(InferenceServerException, match="not served"):
        client.get_model_metadata("resnet")


def test_v2_error_bodies_are_json_with_error_key(server: RunningServer) -> None:
    reply = server.post_json(
        "/v2/models/mnist/infer",
        {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 784], "data": [300] * 784}]},
    )
    assert reply.status == 422 and "0..255" in reply.json()["error"]
    reply = server.request(
        "POST", "/v2/models/mnist/infer", b'{"inputs": []}', {"inference-header-content-length": "999"}
    )
    assert reply.status == 400 and "Inference-Header-Content-Length" in reply.json()["error"]
