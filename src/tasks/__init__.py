"""What train.py, eval.py, export.py and infer.py do differently per task.

The commands are the same for every task; a task module holds what differs.
Which task:
- train.py: the recipe's ``task`` key (or ``--task``); absent = classification.
- eval.py, export.py, infer.py: the ``task`` of the weights' model info
  (src/model_info.py: the ``model_info`` tensor of a .ckpt, the ONNX
  metadata, the MINDIR / AIR ``.json`` sidecar); absent, or weights without
  a record (.pth, .safetensors), = classification. No command has a task flag
  beyond train.py's ``--task``.

``get_task(name)`` returns the module ``src.tasks.<name>``, which provides:

Recipe (train.py)
- ``NAME``: the task's name, as in ``TASKS``.
- ``DEFAULTS``: dict of the recipe keys the task adds to train.py's common
  keys (``train.COMMON_DEFAULTS``: model, num_classes, image_size, pretrained,
  data_path, val_data_path, optimizer / lr schedule / EMA / amp / loss scale
  keys, the run keys). A task value for a common key replaces its default.
  Every merged key is a ``--key`` flag; a recipe key outside the merged set is
  an error (strict config).
- ``PRIMARY_METRIC``: the ``validate`` key best.ckpt follows (highest wins):
  ``top1``, ``AP``, ``mIoU``.
- ``METRIC_KEYS``: the quality metrics (fractions) that ``validate`` returns,
  PRIMARY_METRIC first; metrics.png plots them against the epoch.
- ``check_config(config)``: raise ``src.train_utils.ConfigError`` naming the
  key and the fix for task values no run can use (the common keys are
  checked by ``check_train_config``).

Training (train.py's Trainer; ``config`` is the merged recipe)
- ``create_train_data(config, rank_id, rank_size) -> (dataset, data_info)``:
  a batched MindSpore dataset with attribute ``num_files`` (images on this
  rank; steps per epoch = num_files // batch_size). Its columns, in order,
  are the arguments of the train step. ``data_info`` is whatever
  ``make_info`` and ``create_val_data`` need from the data (classification:
  the class names). Logs what it read (path, images, classes).
- ``create_val_data(config, rank_id, rank_size, data_info)``: the validation
  dataset (same attribute ``num_files``, any attributes ``validate`` needs),
  or None when the recipe has no validation data.
- ``build_network(config)``: the network to train, ``--pretrained`` loaded
  and logged (logger "train").
- ``create_train_step(net, config, optimizer)``: a Cell called as
  ``step(*columns)`` on one batch of the train dataset, returning the loss
  (mindcv / src.timm_recipe train step: EMA parameters named ``ema.<name>``,
  loss scale, gradient clipping where the recipe has it). Its parameters
  are what checkpoints hold and resume restores.
- ``lr_schedule(config, steps_per_epoch) -> [lr per step]`` (optional):
  the task's own schedule instead of src.train_utils.lr_schedule (detection:
  mmdetection's linear warmup over iterations, then steps at epochs), with
  ``describe_lr_schedule(config) -> str``, the schedule named in train.py's
  start line (default: src.train_utils.describe_lr_schedule, the recipe's
  lr_scheduler and warmup).
- ``create_eval_network(config)``: a network with the training network's
  parameter names, into which the Trainer copies the (EMA) weights to
  validate.
- ``validate(eval_net, val_data, batches, config, reduce_sum) -> dict``:
  score one pass; ``batches`` yields each batch's columns as a tuple of
  numpy arrays. ``reduce_sum(numpy array) -> numpy array`` adds per-rank
  sums over the ranks (None on one rank). The dict holds METRIC_KEYS,
  optionally ``val_loss`` and counts (all JSON numbers: they go into
  metrics.jsonl as they are) and ``summary``: one line for the epoch log
  (not recorded).
- ``make_info(config, data_info)``: the model info of the run's checkpoints
  (``src.model_info.make_info(..., task=NAME, **fields)``): what eval /
  export / infer need without the recipe (input size, class names;
  detection: anchors, strides, category ids, test thresholds;
  segmentation: ignore index, label mapping, test scale, palette).

Evaluation (eval.py)
- ``EVAL_DEFAULTS``: dict of eval.py keys the task adds to eval.py's common
  ones (``eval.EVAL_DEFAULTS``), e.g. ``predictions_file``.
- ``evaluate(config, info, where) -> dict``: build the network from
  ``config.checkpoint_path`` (``info``: its model info or None, read from
  ``where``), score ``config.data_path``, print the task's table to stdout,
  return the metrics (JSON-able; eval.py prints them as the last line).
  Raise ``src.dataset.DatasetError`` when nothing could be scored.

Export (export.py) and inference (infer.py)
- ``load_network(path, info, model=None, num_classes=None, fuse=False)
  -> (net, model name, summary)``: the weights file's network, loaded, in
  inference mode (``fuse``: BatchNorm folded, src/fuse.py). ``net`` called on
  a float32 B x 3 x H x W batch returns the output, or a tuple of outputs,
  that the exported file returns (every output with the batch axis first:
  ONNX files get it dynamic, the edge flow writes one file per output and
  image).
- ``export_settings(args, net, model, info, where) -> ExportSettings``: the
  exported file's input size, model info, output names, and a description
  for export.py's last message.
- ``add_infer_arguments(parser)``: infer.py flags of the task.
- ``predict(runner, paths, args) -> list``: run ``infer.Runner`` (checkpoint,
  MINDIR or ONNX; ``runner.run(images) -> [output arrays]``, ``runner.info``)
  on the image files, print the results, write the task's pictures; returns
  JSON-able predictions (infer.py writes them with ``--output_json``).

Edge flow (preprocess.py -> ascend310_infer/ or src/mindir_infer.py ->
postprocess.py; the files are src/edge.py's; optional: preprocess.py refuses
a task without ``preprocess``, as segmentation is today)
- ``add_preprocess_arguments(parser)``: preprocess.py flags of the task.
- ``preprocess(args, info, where) -> str``: write one raw float32
  1 x 3 x H x W file per image (``edge.clear_images_dir``,
  ``edge.image_file_name``) and the record ``edge.write_record(args.output_path,
  record)``: a dict with ``task`` (NAME), ``sources`` and ``original_sizes``
  ({input name: [height, width]}) and whatever ``postprocess`` needs
  (detection: each input's image id and resize factors).
  ``info``: the model info beside ``args.mindir_path`` (None without it).
  Returns the summary line preprocess.py prints.
- ``add_postprocess_arguments(parser)``: postprocess.py flags of the task;
  it must have ``--predictions_file`` (scripts/run_infer_*.sh pass it).
- ``postprocess(record, args) -> dict``: score the result files
  (``edge.read_results(args.result_path, input names, output index)``: output
  i of every input, flat float32, one row per input) against the record,
  print the task's table, return the metrics (postprocess.py prints them as
  its last line, JSON). Raise ``edge.ResultsError`` for unusable results.

Shared helpers for task modules: ``src.train_utils.wrap_train_step(
net_with_loss, config, optimizer, **step_args)`` (the recipe's loss scale and
EMA around any loss cell; step_args e.g. clip_grad=True, clip_value=35),
``set_precision(net, config)`` (the recipe's amp level), ``check_positive``,
``check_image_size``; ``src.model_info.new_info``; ``src.weights.read_weights``
/ ``load_params`` (pretrained backbones, ``drop_classifier``);
``src.evaluation.classification.pad_batch``.
"""
import collections
import importlib

TASKS = ("classification", "detection", "segmentation")
DEFAULT_TASK = "classification"

# export_settings' answer: (height, width) of the input, the model info of the
# exported file, the names of its outputs (ONNX), and e.g. "10 classes".
ExportSettings = collections.namedtuple("ExportSettings",
                                        "height width info output_names description")


class InferError(ValueError):
    """Bad input to infer.py; the message says what to fix."""


def task_name(config_or_info):
    """The task a recipe, config or model info names (None / no key: classification)."""
    name = (config_or_info or {}).get("task") or DEFAULT_TASK
    if name not in TASKS:
        from ..train_utils import ConfigError
        raise ConfigError(f"task {name!r} is not one of {', '.join(TASKS)}")
    return name


def get_task(name):
    """The module src.tasks.<name>."""
    from ..train_utils import ConfigError
    if name not in TASKS:
        raise ConfigError(f"task {name!r} is not one of {', '.join(TASKS)}")
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise ConfigError(f"the {name} task is not in this version of the code "
                          f"(src/tasks/{name}.py is missing)") from None
