"""The task structure (src/tasks): how the commands tell the task, and a
task's own model-info fields travelling with the weights unchanged."""
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

import train
from src import model_info
from src.tasks import TASKS, get_task, task_name
from src.train_utils import ConfigError
from src.weights import save_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dense_info():
    """A record with fields of a task other than classification."""
    return model_info.new_info("detection", "ghostnetv2_100", 3, (96, 128), "test",
                               class_names=["cat", "dog", "ant"], category_ids=[1, 7, 90],
                               anchors=[[[10, 13], [16, 30]], [[33, 23], [30, 61]]],
                               strides=[16, 32], score_threshold=0.05)


def test_records_name_their_task():
    classifier = model_info.make_info("ghostnetv2_100", 3, 64, 1.0, ["a", "b", "c"])
    assert (classifier["task"], classifier["version"]) == ("classification", 1)
    assert model_info.task_of(None) == task_name(None) == "classification"
    old = dict(classifier)
    del old["task"]  # a record of the code before tasks
    assert task_name(model_info.parse(model_info.to_json(old), "old")) == "classification"
    info = dense_info()
    assert (task_name(info), info["version"]) == ("detection", 2)
    assert info["input_size"] == [3, 96, 128] and "crop_pct" not in info


def test_task_fields_round_trip(tmp_path):
    """checkpoint tensor, ONNX metadata_props, MINDIR sidecar: the same record back."""
    info = dense_info()
    ckpt = str(tmp_path / "det.ckpt")
    save_checkpoint({"w": np.zeros(2, np.float32), **model_info.checkpoint_entry(info)}, ckpt)
    assert model_info.read_info(ckpt) == (info, ckpt)

    import onnx  # after MindSpore (both bring protobuf)
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    model_info.set_onnx_info(model, info)
    onnx.save(model, str(tmp_path / "det.onnx"))
    assert model_info.read_info(str(tmp_path / "det.onnx"))[0] == info

    (tmp_path / "det.mindir").write_bytes(b"")
    model_info.write_sidecar(str(tmp_path / "det.mindir"), info)
    assert model_info.read_info(str(tmp_path / "det.mindir"))[0] == info


def test_unknown_task_is_a_clear_error(tmp_path):
    text = model_info.to_json(dict(dense_info(), task="pose"))
    with pytest.raises(model_info.ModelInfoError, match="task 'pose', which this code"):
        model_info.parse(text, "pose.ckpt")
    with pytest.raises(ConfigError, match="not one of classification"):
        get_task("pose")
    recipe = tmp_path / "pose.yaml"
    recipe.write_text(yaml.safe_dump({"task": "pose", "data_path": str(tmp_path)}))
    with pytest.raises(ConfigError, match="task 'pose' is not one of"):
        train.parse_config(["--config_path", str(recipe)])


def test_task_without_edge_flow_is_a_clear_error(tmp_path, capsys):
    """preprocess.py on a segmenter's MINDIR: a message, not an AttributeError."""
    import preprocess
    info = model_info.new_info("segmentation", "ghostnetv2_100", 3, (64, 64), "test")
    mindir = tmp_path / "seg.mindir"
    mindir.write_bytes(b"")
    model_info.write_sidecar(str(mindir), info)
    assert preprocess.main(["--data_path", str(tmp_path), "--mindir_path", str(mindir)]) == 1
    err = capsys.readouterr().err
    assert f"{mindir}.json: the segmentation task has no edge flow" in err and "eval.py" in err


def test_recipe_keys_are_the_common_and_the_task_keys(tmp_path):
    classification = get_task("classification")
    assert set(train.TRAIN_DEFAULTS) == set(train.COMMON_DEFAULTS) | set(classification.DEFAULTS)
    assert "classification" in TASKS and classification.NAME == "classification"
    assert classification.PRIMARY_METRIC in classification.METRIC_KEYS
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"task": "classification", "data_path": str(tmp_path),
                                      "label_smoothing": 0.2}))
    config = train.parse_config(["--config_path", str(recipe), "--label_smoothing", "0.3"])
    assert (config.task, config.label_smoothing) == ("classification", 0.3)
    # a task's own check: classification's label smoothing range
    with pytest.raises(ConfigError, match="--label_smoothing must be in"):
        train.parse_config(["--config_path", str(recipe), "--label_smoothing", "1.5"])


def test_several_outputs_through_export_and_the_edge_flow(tmp_path):
    """A dense task's network returns several outputs: the ONNX file names each,
    the edge flow writes <input>_<i>.bin for each (what ascend310_infer writes)."""
    import mindspore as ms
    from mindspore import nn

    from export import export_network
    from src import edge

    class ThreeOutputs(nn.Cell):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, stride=2, has_bias=True)

        def construct(self, x):
            y = self.conv(x)
            return y, y.mean(axis=(2, 3)), y * 2

    ms.set_context(mode=ms.GRAPH_MODE)
    net = ThreeOutputs()
    net.set_train(False)
    inputs = np.random.default_rng(0).random((3, 1, 3, 8, 8), np.float32)
    expected = [[o.asnumpy()[0] for o in net(ms.Tensor(x))] for x in inputs]

    names = ("maps", "pooled", "doubled")
    export_network(net, "ONNX", str(tmp_path / "net.onnx"), 1, 8, 8, output_names=names)
    import onnxruntime
    session = onnxruntime.InferenceSession(str(tmp_path / "net.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert tuple(o.name for o in session.get_outputs()) == names
    batch = session.run(None, {"image": inputs[:, 0]})  # the batch axis is dynamic
    for index in range(3):
        np.testing.assert_allclose(batch[index], [e[index] for e in expected], atol=1e-5)

    export_network(net, "MINDIR", str(tmp_path / "net.mindir"), 2, 8, 8)
    images = tmp_path / "images"
    images.mkdir()
    for i, x in enumerate(inputs):
        x.tofile(images / edge.image_file_name(i))
    # the script, as run_infer_cpu.sh runs it (its own process: MindSpore's device is set there)
    done = subprocess.run([sys.executable, "src/mindir_infer.py", "--mindir_path",
                           str(tmp_path / "net.mindir"), "--dataset_path", str(images),
                           "--result_path", str(tmp_path / "results")],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "inference of 3 inputs" in done.stdout, done.stderr
    input_names = [edge.image_file_name(i) for i in range(3)]
    for index in range(3):
        results = edge.read_results(str(tmp_path / "results"), input_names, index)
        np.testing.assert_allclose(results, [e[index].ravel() for e in expected], atol=1e-5)
    assert not (tmp_path / "results" / edge.result_name(input_names[0], 3)).exists()
