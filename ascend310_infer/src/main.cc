/**
 * GhostNetV2 inference on an Ascend 310 with MindSpore's C++ API, for every task.
 *
 * Reads preprocess.py's inputs (one raw float32 1x3xHxW file per image) from
 * --dataset_path, runs the batch-1 MINDIR exported by export.py, and writes
 * output i of each input "<name>.bin" to "<result_path>/<name>_<i>.bin", as
 * float32 (a classifier: its logits; a detector: N x anchors x (x1, y1, x2,
 * y2, objectness, class scores), decoded in the graph; a network with several
 * outputs: one file each), which postprocess.py scores with the task named in
 * preprocess.py's labels.json (a detector: NMS, boxes mapped back with the
 * resize factors recorded per input, COCO AP). The mean time per inference goes to stdout and to
 * ./time_Result/test_perform_static.txt.
 *
 *   ./out/main --mindir_path=ghostnetv2_100.mindir --dataset_path=preprocess_Result/images --device_id=0
 */
#include <gflags/gflags.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "include/api/context.h"
#include "include/api/model.h"
#include "include/api/serialization.h"
#include "include/api/types.h"
#include "inc/utils.h"

using mindspore::Context;
using mindspore::Graph;
using mindspore::GraphCell;
using mindspore::kSuccess;
using mindspore::Model;
using mindspore::ModelType;
using mindspore::MSTensor;
using mindspore::Serialization;
using mindspore::Status;

DEFINE_string(mindir_path, "", "MINDIR exported by export.py with --batch_size 1");
DEFINE_string(dataset_path, ".", "folder of preprocess.py's .bin inputs");
DEFINE_int32(device_id, 0, "Ascend device id");
DEFINE_string(result_path, "./result_Files", "folder for the <input name>_<output index>.bin outputs");
DEFINE_string(precision_mode, "", "Ascend precision mode (empty: the runtime's default)");

namespace {

bool BuildModel(Model *model) {
  auto context = std::make_shared<Context>();
  auto ascend310 = std::make_shared<mindspore::Ascend310DeviceInfo>();
  ascend310->SetDeviceID(FLAGS_device_id);
  if (!FLAGS_precision_mode.empty()) {
    ascend310->SetPrecisionMode(FLAGS_precision_mode);
  }
  context->MutableDeviceInfo().push_back(ascend310);

  Graph graph;
  Status ret = Serialization::Load(FLAGS_mindir_path, ModelType::kMindIR, &graph);
  if (ret != kSuccess) {
    std::cerr << "ERROR: cannot load " << FLAGS_mindir_path << " as a MINDIR: " << ret.ToString() << std::endl;
    return false;
  }
  ret = model->Build(GraphCell(graph), context);
  if (ret != kSuccess) {
    std::cerr << "ERROR: building the model on device " << FLAGS_device_id << " failed: " << ret.ToString()
              << std::endl;
    return false;
  }
  return true;
}

std::string ShapeText(const std::vector<int64_t> &shape) {
  std::string text;
  for (size_t i = 0; i < shape.size(); ++i) {
    text += (i ? "x" : "") + std::to_string(shape[i]);
  }
  return text;
}

void ReportTiming(const std::vector<double> &times_ms) {
  double total = 0.0;
  for (double t : times_ms) {
    total += t;
  }
  double average = times_ms.empty() ? 0.0 : total / times_ms.size();
  std::string line = "NN inference cost average time: " + std::to_string(average) + " ms of infer_count " +
                     std::to_string(times_ms.size());
  std::cout << line << std::endl;
  if (MakeDirs("./time_Result")) {
    std::ofstream("./time_Result/test_perform_static.txt", std::ios::trunc) << line << std::endl;
  }
}

}  // namespace

int main(int argc, char **argv) {
  gflags::SetUsageMessage("GhostNetV2 Ascend 310 inference on preprocessed .bin inputs");
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (RealPath(FLAGS_mindir_path).empty()) {
    std::cerr << "ERROR: --mindir_path is not a file: '" << FLAGS_mindir_path << "'" << std::endl;
    return 1;
  }
  std::vector<std::string> files = GetAllFiles(FLAGS_dataset_path);
  if (files.empty()) {
    std::cerr << "ERROR: no .bin inputs in --dataset_path '" << FLAGS_dataset_path
              << "' (run preprocess.py and pass its images folder)" << std::endl;
    return 1;
  }
  if (!MakeDirs(FLAGS_result_path)) {
    return 1;
  }

  Model model;
  if (!BuildModel(&model)) {
    return 1;
  }
  std::vector<MSTensor> model_inputs = model.GetInputs();
  if (model_inputs.size() != 1) {
    std::cerr << "ERROR: the MINDIR has " << model_inputs.size() << " inputs, expected 1" << std::endl;
    return 1;
  }
  const MSTensor &input = model_inputs[0];
  std::cout << "loaded " << FLAGS_mindir_path << " (input " << ShapeText(input.Shape()) << ", outputs";
  for (const MSTensor &output : model.GetOutputs()) {
    std::cout << " " << ShapeText(output.Shape());
  }
  std::cout << "), " << files.size() << " inputs from " << FLAGS_dataset_path << std::endl;

  std::vector<double> times_ms;
  std::vector<char> data;
  for (const std::string &file : files) {
    if (!ReadFile(file, &data)) {
      return 1;
    }
    if (data.size() != input.DataSize()) {
      std::cerr << "ERROR: " << file << " holds " << data.size() << " bytes, the model's input "
                << ShapeText(input.Shape()) << " takes " << input.DataSize()
                << ": export with --batch_size 1 at the preprocessed --image_size" << std::endl;
      return 1;
    }
    std::vector<MSTensor> inputs;
    inputs.emplace_back(input.Name(), input.DataType(), input.Shape(), data.data(), data.size());
    std::vector<MSTensor> outputs;
    auto start = std::chrono::steady_clock::now();
    Status ret = model.Predict(inputs, &outputs);
    auto end = std::chrono::steady_clock::now();
    if (ret != kSuccess) {
      std::cerr << "ERROR: inference on " << file << " failed: " << ret.ToString() << std::endl;
      return 1;
    }
    times_ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
    if (!WriteResult(file, outputs, FLAGS_result_path)) {
      return 1;
    }
  }
  ReportTiming(times_ms);
  std::cout << "wrote " << files.size() << " results to " << FLAGS_result_path << std::endl;
  return 0;
}
