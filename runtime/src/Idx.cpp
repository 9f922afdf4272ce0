//===- Idx.cpp - Load MNIST's IDX files -----------------------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// An IDX file is a big-endian header, then the elements in row-major order.
// The header is a magic number (two zero bytes, the element type, the number
// of dimensions), then one 32-bit size per dimension. MNIST's images are
// type 0x08 (unsigned byte) with three dimensions (count, rows, columns);
// its labels are type 0x08 with one (count).
//
// Every header field is untrusted: the data are read in chunks, so that a
// header that announces more than the file holds costs no more memory than
// the file, and nothing is converted until all of it has been read.
//
//===----------------------------------------------------------------------===//

#include "Idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sys/stat.h>

using namespace nnc;

namespace {

constexpr uint8_t UnsignedByteType = 0x08;
constexpr size_t ChunkBytes = size_t(1) << 20;

std::string quote(const std::string &S) { return "'" + S + "'"; }

std::string plural(uint64_t N, const char *Noun) {
  return std::to_string(N) + " " + Noun + (N == 1 ? "" : "s");
}

/// The name of an IDX element type, for messages.
const char *typeName(uint8_t Type) {
  switch (Type) {
  case 0x08:
    return "unsigned byte";
  case 0x09:
    return "signed byte";
  case 0x0B:
    return "16-bit integer";
  case 0x0C:
    return "32-bit integer";
  case 0x0D:
    return "float";
  case 0x0E:
    return "double";
  default:
    return "unknown";
  }
}

/// One open IDX file. zlib reads it whether it is raw or gzip-compressed:
/// gzread passes a file through unchanged unless it starts with gzip's magic
/// bytes 1f 8b, whatever its name.
class IdxFile {
public:
  explicit IdxFile(LoadError &Err) : Err(Err) {}
  ~IdxFile() {
    if (F)
      gzclose(F);
  }
  IdxFile(const IdxFile &) = delete;
  IdxFile &operator=(const IdxFile &) = delete;

  /// Opens \p Dir/\p Name, or \p Dir/\p Name.gz when the first is absent.
  bool open(const std::string &Dir, const std::string &Name);
  /// Reads the header of an unsigned-byte IDX file of \p NumDims dimensions,
  /// \p Kind ("images", "labels") saying what the file should hold.
  bool readHeader(unsigned NumDims, const char *Kind,
                  std::vector<uint32_t> &Dims);
  /// Reads the next \p N bytes (the \p What of the file) into \p Out.
  bool readData(uint64_t N, const std::string &What, std::vector<uint8_t> &Out);
  /// Checks that nothing follows the data; for gzip this also checks the
  /// stream's trailer (CRC and length), which zlib reads only then.
  bool expectEnd();

  const std::string &path() const { return Path; }
  bool fail(const std::string &Msg) {
    Err.Where = Path;
    Err.Message = Msg;
    return false;
  }

private:
  /// Reads up to \p N bytes; returns how many, or -1 after setting Err.
  int64_t read(uint8_t *Buf, size_t N);
  /// zlib's message for the last error, without the path it prefixes.
  std::string zlibError(int &Code);

  LoadError &Err;
  gzFile F = nullptr;
  std::string Path;
  uint64_t Offset = 0; ///< Uncompressed bytes read so far.
};

bool IdxFile::open(const std::string &Dir, const std::string &Name) {
  Path = Dir + "/" + Name;
  struct stat St;
  if (stat(Path.c_str(), &St) != 0) {
    std::string Gz = Path + ".gz";
    if (stat(Gz.c_str(), &St) != 0)
      return fail("missing MNIST file (neither it nor " + Name +
                  ".gz is in the data folder)");
    Path = Gz;
  }
  if (S_ISDIR(St.st_mode))
    return fail("is a folder, not an IDX file");
  errno = 0;
  F = gzopen(Path.c_str(), "rb");
  if (!F)
    return fail(std::string("cannot open the file: ") +
                (errno ? std::strerror(errno) : "out of memory"));
  gzbuffer(F, 1 << 17);
  return true;
}

std::string IdxFile::zlibError(int &Code) {
  std::string Msg = gzerror(F, &Code);
  if (Msg.compare(0, Path.size() + 2, Path + ": ") == 0)
    Msg.erase(0, Path.size() + 2);
  return Msg;
}

int64_t IdxFile::read(uint8_t *Buf, size_t N) {
  size_t Got = 0;
  while (Got < N) {
    int R = gzread(F, Buf + Got, unsigned(std::min(N - Got, ChunkBytes)));
    int Code;
    if (R < 0) {
      std::string Msg = zlibError(Code);
      fail(
          (Code == Z_ERRNO ? "cannot read the file: " : "corrupt gzip data: ") +
          Msg);
      return -1;
    }
    if (R == 0) {
      // A gzip stream cut short is not an error to gzread, only a flag.
      std::string Msg = zlibError(Code);
      if (Code == Z_BUF_ERROR) {
        fail("truncated: the gzip data end early (" + Msg + "), after " +
             plural(Offset + Got, "byte") + " of content");
        return -1;
      }
      break;
    }
    Got += size_t(R);
  }
  Offset += Got;
  return int64_t(Got);
}

bool IdxFile::readHeader(unsigned NumDims, const char *Kind,
                         std::vector<uint32_t> &Dims) {
  uint8_t Head[4 + 4 * 3];
  size_t Size = 4 + 4 * size_t(NumDims);
  int64_t Got = read(Head, Size);
  if (Got < 0)
    return false;
  if (Got == 0)
    return fail("the file is empty");
  if (Head[0] != 0 || (Got > 1 && Head[1] != 0))
    return fail("not an IDX file (it does not start with the two zero bytes "
                "of an IDX magic number)");
  if (Got < 4)
    return fail("the file ends after " + plural(uint64_t(Got), "byte") +
                ", inside its magic number");
  char Magic[16];
  std::snprintf(Magic, sizeof(Magic), "0x%02X%02X%02X%02X", Head[0], Head[1],
                Head[2], Head[3]);
  if (Head[2] != UnsignedByteType) {
    char Type[8];
    std::snprintf(Type, sizeof(Type), "0x%02X", Head[2]);
    return fail(std::string("magic number ") + Magic + ": element type " +
                Type + " (" + typeName(Head[2]) +
                ") is not supported; MNIST's files hold unsigned bytes (0x08)");
  }
  if (Head[3] != NumDims)
    return fail(std::string("magic number ") + Magic + ": " +
                plural(Head[3], "dimension") + ", but a file of " + Kind +
                " has " + std::to_string(NumDims) +
                " (is it the wrong file of the pair?)");
  if (size_t(Got) < Size)
    return fail("the file ends after " + plural(uint64_t(Got), "byte") +
                ", inside its " + std::to_string(Size) + "-byte header");
  Dims.clear();
  for (unsigned I = 0; I < NumDims; ++I) {
    const uint8_t *P = Head + 4 + 4 * I;
    Dims.push_back(uint32_t(P[0]) << 24 | uint32_t(P[1]) << 16 |
                   uint32_t(P[2]) << 8 | uint32_t(P[3]));
  }
  return true;
}

bool IdxFile::readData(uint64_t N, const std::string &What,
                       std::vector<uint8_t> &Out) {
  Out.clear();
  while (Out.size() < N) {
    size_t Old = Out.size();
    Out.resize(Old + size_t(std::min<uint64_t>(N - Old, ChunkBytes)));
    int64_t Got = read(Out.data() + Old, Out.size() - Old);
    if (Got < 0)
      return false;
    Out.resize(Old + size_t(Got));
    if (Got == 0)
      return fail("truncated: the header announces " + What + " (" +
                  plural(N, "byte") + ") but the file holds only " +
                  std::to_string(Out.size()));
  }
  return true;
}

bool IdxFile::expectEnd() {
  uint8_t Extra;
  int64_t Got = read(&Extra, 1);
  if (Got < 0)
    return false;
  if (Got > 0)
    return fail("unexpected data after the " + plural(Offset - 1, "byte") +
                " that the header announces");
  return true;
}

/// Loads the training files, then the test files, into one Table.
class Loader {
public:
  Loader(const std::string &Dir, const Manifest &M, Table &T, LoadError &Err)
      : Dir(Dir), M(M), T(T), Err(Err) {}

  bool load();

private:
  bool loadPair(const std::string &Prefix);

  const std::string &Dir;
  const Manifest &M;
  Table &T;
  LoadError &Err;
  double Pixel[256]; ///< The input value of each byte.
};

bool Loader::loadPair(const std::string &Prefix) {
  const DataSlot &Input = M.Slots[0];
  const DataSlot &Label = M.Slots[1];
  uint64_t Width = uint64_t(Input.width());

  IdxFile Images(Err), Labels(Err);
  std::vector<uint32_t> ImageDims, LabelDims;
  if (!Images.open(Dir, Prefix + "-images-idx3-ubyte") ||
      !Images.readHeader(3, "images", ImageDims))
    return false;
  uint64_t Count = ImageDims[0];
  uint64_t Pixels = uint64_t(ImageDims[1]) * ImageDims[2];
  if (Count == 0)
    return Images.fail("the file holds no images");
  if (Pixels != Width)
    return Images.fail("the images are " + std::to_string(ImageDims[1]) + "x" +
                       std::to_string(ImageDims[2]) + " (" +
                       plural(Pixels, "value") + ") but input " +
                       quote(Input.Name) + " takes " + std::to_string(Width) +
                       " values per row");

  if (!Labels.open(Dir, Prefix + "-labels-idx1-ubyte") ||
      !Labels.readHeader(1, "labels", LabelDims))
    return false;
  if (LabelDims[0] != Count)
    return Labels.fail("the file holds " + plural(LabelDims[0], "label") +
                       " but " + Images.path() + " holds " +
                       plural(Count, "image"));

  // Width is at most 2^40 (the manifest's bound) and Count below 2^32, so
  // the product cannot overflow.
  std::vector<uint8_t> Bytes;
  if (!Images.readData(Count * Width, plural(Count, "image"), Bytes) ||
      !Images.expectEnd())
    return false;
  // Pixels stay bytes, coding for their scaled values.
  SlotData &X = T.Slots[0];
  X.CodeValues.assign(std::begin(Pixel), std::end(Pixel));
  X.Codes.insert(X.Codes.end(), Bytes.begin(), Bytes.end());

  if (!Labels.readData(Count, plural(Count, "label"), Bytes) ||
      !Labels.expectEnd())
    return false;
  SlotData &Y = T.Slots[1];
  Y.Classes.reserve(Y.Classes.size() + Bytes.size());
  for (size_t I = 0; I < Bytes.size(); ++I) {
    if (Bytes[I] >= Label.Classes)
      return Labels.fail(
          "item " + std::to_string(I) + " (counting from 0) has label " +
          std::to_string(Bytes[I]) + ", out of range for label " +
          quote(Label.Name) + " (classes 0 to " +
          std::to_string(Label.Classes - 1) + ")");
    Y.Classes.push_back(int32_t(Bytes[I]));
  }
  T.Rows += size_t(Count);
  return true;
}

bool Loader::load() {
  Err = LoadError();
  if (M.Slots.size() != 2 || M.Slots[0].IsLabel || !M.Slots[1].IsClass) {
    Err.Message = "an idx data source feeds one input and one class label, "
                  "and model " +
                  quote(M.Model) + " has other inputs or labels";
    return false;
  }
  struct stat St;
  Err.Where = Dir;
  if (stat(Dir.c_str(), &St) != 0) {
    Err.Message =
        std::string("cannot open the data folder: ") + std::strerror(errno);
    return false;
  }
  if (!S_ISDIR(St.st_mode)) {
    Err.Message = "not a folder (an idx source reads MNIST's four IDX files "
                  "from a folder)";
    return false;
  }
  Err.Where.clear();

  for (int B = 0; B < 256; ++B)
    Pixel[B] = M.PixelLow + (M.PixelHigh - M.PixelLow) * (B / 255.0);

  T = Table();
  for (const DataSlot &D : M.Slots) {
    SlotData S;
    S.Width = size_t(D.width());
    S.IsClass = D.IsClass;
    T.Slots.push_back(std::move(S));
  }
  if (!loadPair("train"))
    return false;
  T.FixedTrainRows = T.Rows;
  if (!loadPair("t10k"))
    return false;
  T.FixedSplit = true;
  return true;
}

} // namespace

bool nnc::loadIdx(const std::string &Dir, const Manifest &M, Table &T,
                  LoadError &Err) {
  return Loader(Dir, M, T, Err).load();
}
