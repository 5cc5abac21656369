/**
 * File helpers of the GhostNetV2 Ascend 310 inference program.
 */
#ifndef GHOSTNETV2_ASCEND310_INFER_INC_UTILS_H_
#define GHOSTNETV2_ASCEND310_INFER_INC_UTILS_H_

#include <string>
#include <vector>

#include "include/api/types.h"

// Absolute path of an existing file or folder; empty if it does not exist.
std::string RealPath(const std::string &path);

// The *.bin files of a folder (preprocess.py's inputs), sorted by name.
std::vector<std::string> GetAllFiles(const std::string &dir);

// The whole file as bytes; false (with a message) if it cannot be read.
bool ReadFile(const std::string &file, std::vector<char> *data);

// Creates the folder (and its parents) if needed; false if that fails.
bool MakeDirs(const std::string &dir);

// Writes output i of one input file "<dir>/<name>.bin" as
// "<result_dir>/<name>_<i>.bin", raw float32 (a float16 output converted), e.g. a
// classifier's logits, a detector's decoded rows, a segmenter's logits. Returns false on
// failure.
bool WriteResult(const std::string &input_file, const std::vector<mindspore::MSTensor> &outputs,
                 const std::string &result_dir);

#endif  // GHOSTNETV2_ASCEND310_INFER_INC_UTILS_H_
