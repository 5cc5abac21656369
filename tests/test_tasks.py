"""The task structure (src/tasks): how the commands tell the task, and a
task's own model-info fields travelling with the weights unchanged."""
import numpy as np
import pytest
import yaml

import train
from src import model_info
from src.tasks import TASKS, get_task, task_name
from src.train_utils import ConfigError
from src.weights import save_checkpoint


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
