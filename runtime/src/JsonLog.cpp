//===- JsonLog.cpp - The per-epoch JSON log -------------------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#include "JsonLog.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

using namespace nnc;

std::string nnc::jsonString(std::string_view S) {
  std::string Out = "\"";
  for (char C : S) {
    unsigned char U = static_cast<unsigned char>(C);
    if (C == '"' || C == '\\') {
      Out += '\\';
      Out += C;
    } else if (U < 0x20) {
      char Escape[8];
      std::snprintf(Escape, sizeof(Escape), "\\u%04x", U);
      Out += Escape;
    } else {
      Out += C;
    }
  }
  return Out + "\"";
}

std::string nnc::jsonNumber(double V) {
  if (!std::isfinite(V))
    return "null";
  char Text[32];
  std::snprintf(Text, sizeof(Text), "%.17g", V);
  return Text;
}

JsonLog::~JsonLog() {
  if (Fd >= 0)
    ::close(Fd);
}

bool JsonLog::open(const std::string &File, std::string &Err) {
  Path = File;
  Fd = ::open(Path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  if (Fd < 0) {
    Err = "cannot open JSON log '" + Path + "': " + std::strerror(errno);
    return false;
  }
  return true;
}

bool JsonLog::append(const std::string &Object, std::string &Err) {
  std::string Line = Object + "\n";
  const char *P = Line.data();
  size_t Left = Line.size();
  while (Left > 0) {
    ssize_t N = ::write(Fd, P, Left);
    if (N < 0 && errno == EINTR)
      continue;
    if (N < 0) {
      Err = "writing JSON log '" + Path + "': " + std::strerror(errno);
      return false;
    }
    P += N;
    Left -= size_t(N);
  }
  return true;
}
