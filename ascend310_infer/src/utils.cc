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

bool WriteResult(const std::string &input_file, const std::vector<mindspore::MSTensor> &outputs,
                 const std::string &result_dir) {
  std::string name = input_file.substr(input_file.find_last_of('/') + 1);
  name = name.substr(0, name.rfind('.'));
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::string path = result_dir + "/" + name + "_" + std::to_string(i) + ".bin";
    std::shared_ptr<const void> data = outputs[i].Data();
    std::ofstream stream(path, std::ios::binary | std::ios::trunc);
    if (!stream.is_open() || data == nullptr ||
        !stream.write(reinterpret_cast<const char *>(data.get()), outputs[i].DataSize())) {
      std::cerr << "ERROR: cannot write " << path << std::endl;
      return false;
    }
  }
  return true;
}
