/**
 * File helpers of the GhostNetV2 Ascend 310 inference program.
 */
#include "inc/utils.h"

#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>

std::string RealPath(const std::string &path) {
  char resolved[PATH_MAX] = {0};
  if (realpath(path.c_str(), resolved) == nullptr) {
    return "";
  }
  return std::string(resolved);
}

static bool EndsWith(const std::string &text, const std::string &suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::vector<std::string> GetAllFiles(const std::string &dir) {
  std::vector<std::string> files;
  DIR *handle = opendir(dir.c_str());
  if (handle == nullptr) {
    std::cerr << "ERROR: cannot open folder " << dir << ": " << std::strerror(errno) << std::endl;
    return files;
  }
  for (struct dirent *entry = readdir(handle); entry != nullptr; entry = readdir(handle)) {
    std::string name(entry->d_name);
    if (name[0] != '.' && EndsWith(name, ".bin")) {
      files.push_back(dir + "/" + name);
    }
  }
  closedir(handle);
  // readdir's order is arbitrary; sorted names give a reproducible run.
  std::sort(files.begin(), files.end());
  return files;
}

bool ReadFile(const std::string &file, std::vector<char> *data) {
  std::ifstream stream(file, std::ios::binary | std::ios::ate);
  if (!stream.is_open()) {
    std::cerr << "ERROR: cannot open " << file << std::endl;
    return false;
  }
  std::streamsize size = stream.tellg();
  stream.seekg(0, std::ios::beg);
  data->resize(static_cast<size_t>(size));
  if (size > 0 && !stream.read(data->data(), size)) {
    std::cerr << "ERROR: cannot read " << file << std::endl;
    return false;
  }
  return true;
}

bool MakeDirs(const std::string &dir) {
  for (size_t pos = dir.find('/', 1); ; pos = dir.find('/', pos + 1)) {
    std::string prefix = dir.substr(0, pos);
    if (!prefix.empty() && mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      std::cerr << "ERROR: cannot create folder " << prefix << ": " << std::strerror(errno) << std::endl;
      return false;
    }
    if (pos == std::string::npos) {
      return true;
    }
  }
}

// IEEE half -> float (normals, subnormals, infinities, NaN).
static float HalfToFloat(uint16_t half) {
  int sign = (half >> 15) ? -1 : 1;
  int exponent = (half >> 10) & 0x1f;
  int mantissa = half & 0x3ff;
  if (exponent == 0) {
    return sign * std::ldexp(static_cast<float>(mantissa), -24);
  }
  if (exponent == 31) {
    return mantissa ? NAN : sign * INFINITY;
  }
  return sign * std::ldexp(static_cast<float>(mantissa | 0x400), exponent - 25);
}

// The output as float32 bytes: postprocess.py reads every result as float32,
// while an output may come back in float16 (e.g. with --precision_mode
// force_fp16). Empty (with a message) for other types.
static std::vector<char> Float32Bytes(const mindspore::MSTensor &output, const std::string &path) {
  std::shared_ptr<const void> data = output.Data();
  std::vector<char> bytes;
  if (data == nullptr) {
    std::cerr << "ERROR: output for " << path << " holds no data" << std::endl;
  } else if (output.DataType() == mindspore::DataType::kNumberTypeFloat32) {
    const char *begin = reinterpret_cast<const char *>(data.get());
    bytes.assign(begin, begin + output.DataSize());
  } else if (output.DataType() == mindspore::DataType::kNumberTypeFloat16) {
    const uint16_t *half = reinterpret_cast<const uint16_t *>(data.get());
    bytes.resize(output.ElementNum() * sizeof(float));
    float *out = reinterpret_cast<float *>(bytes.data());
    for (int64_t i = 0; i < output.ElementNum(); ++i) {
      out[i] = HalfToFloat(half[i]);
    }
  } else {
    std::cerr << "ERROR: output for " << path << " has data type " << static_cast<int>(output.DataType())
              << ", neither float32 nor float16: export the model with export.py" << std::endl;
  }
  return bytes;
}

bool WriteResult(const std::string &input_file, const std::vector<mindspore::MSTensor> &outputs,
                 const std::string &result_dir) {
  std::string name = input_file.substr(input_file.find_last_of('/') + 1);
  name = name.substr(0, name.rfind('.'));
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::string path = result_dir + "/" + name + "_" + std::to_string(i) + ".bin";
    std::vector<char> bytes = Float32Bytes(outputs[i], path);
    if (bytes.empty()) {
      return false;
    }
    std::ofstream stream(path, std::ios::binary | std::ios::trunc);
    if (!stream.is_open() || !stream.write(bytes.data(), bytes.size())) {
      std::cerr << "ERROR: cannot write " << path << std::endl;
      return false;
    }
  }
  return true;
}
