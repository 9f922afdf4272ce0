//===- Corpus.cpp - Read text corpora: tagged sentences, polarity ---------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// Both readers load the whole file into memory (the largest corpus is 3 MB)
// and scan it once with string_views, copying only the words they keep.
//
//===----------------------------------------------------------------------===//

#include "Corpus.h"
#include "CsvRecords.h"
#include "Files.h"
#include "Numbers.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>

using namespace nnc;

namespace {

/// Reads the whole file \p Path into \p Out, without a leading UTF-8 byte
/// order mark. On failure sets \p Err to "cannot open PATH: <reason>" or
/// "cannot read PATH: <reason>".
bool readWholeFile(const std::string &Path, std::string &Out,
                   std::string &Err) {
  Out.clear();
  bool Opened;
  if (!readFile(Path, Out, Opened)) {
    Err = (Opened ? "cannot read " : "cannot open ") + Path + ": " +
          std::strerror(errno);
    return false;
  }
  if (Out.compare(0, 3, "\xEF\xBB\xBF") == 0)
    Out.erase(0, 3);
  return true;
}

std::string where(const std::string &Path, size_t Line) {
  return Path + ":" + std::to_string(Line) + ": ";
}

bool isBlank(char C) { return C == ' ' || C == '\t'; }

bool isWordByte(unsigned char C) {
  return (C >= 'a' && C <= 'z') || (C >= 'A' && C <= 'Z') ||
         (C >= '0' && C <= '9') || C >= 0x80;
}

} // namespace

bool nnc::readTaggedCorpus(const std::string &Path,
                           std::vector<TaggedSentence> &Out,
                           std::string &Err) {
  std::string Text;
  if (!readWholeFile(Path, Text, Err))
    return false;
  size_t Sentences = 0;
  size_t Line = 0;
  for (size_t Pos = 0; Pos < Text.size();) {
    ++Line;
    size_t End = Text.find('\n', Pos);
    if (End == std::string::npos)
      End = Text.size();
    std::string_view L(Text.data() + Pos, End - Pos);
    Pos = End + 1;
    if (!L.empty() && L.back() == '\r')
      L.remove_suffix(1);

    TaggedSentence S;
    for (size_t I = 0; I < L.size();) {
      if (isBlank(L[I])) {
        ++I;
        continue;
      }
      size_t J = I;
      while (J < L.size() && !isBlank(L[J]))
        ++J;
      std::string_view Token = L.substr(I, J - I);
      I = J;
      size_t Slash = Token.rfind('/');
      const char *Problem = Slash == std::string_view::npos ? "has no '/'"
                            : Slash == 0                   ? "has an empty word"
                            : Slash + 1 == Token.size()    ? "has an empty tag"
                                                           : nullptr;
      if (Problem) {
        Err = where(Path, Line) + "token '" + std::string(Token) + "' " +
              Problem + " (expected word/TAG)";
        return false;
      }
      S.Words.emplace_back(Token.substr(0, Slash));
      S.Tags.emplace_back(Token.substr(Slash + 1));
    }
    if (S.Words.empty())
      continue; // A blank line.
    Out.push_back(std::move(S));
    ++Sentences;
  }
  if (Sentences == 0) {
    Err = Path + ": no sentences (expected word/TAG tokens, one sentence a line)";
    return false;
  }
  return true;
}

bool nnc::readPolarityCsv(const std::string &Path,
                          std::vector<LabelledText> &Out, std::string &Err) {
  std::string Text;
  if (!readWholeFile(Path, Text, Err))
    return false;
  CsvRecordReader Records(Text);
  std::vector<std::string> Fields;
  size_t Count = 0;
  while (Records.next(Fields)) {
    std::string Here = where(Path, Records.line());
    if (Fields.size() != 2) {
      Err = Here + "expected 2 fields (label, text), found " +
            std::to_string(Fields.size());
      return false;
    }
    LabelledText R;
    R.Label = std::string(trimSpaces(Fields[0]));
    if (R.Label.empty()) {
      Err = Here + "empty label";
      return false;
    }
    R.Words = tokenize(Fields[1]);
    if (R.Words.empty()) {
      Err = Here + "the text has no words";
      return false;
    }
    Out.push_back(std::move(R));
    ++Count;
  }
  if (!Records.error().empty()) {
    Err = where(Path, Records.line()) + Records.error();
    return false;
  }
  if (Count == 0) {
    Err = Path + ": no records (expected label,text lines)";
    return false;
  }
  return true;
}

std::vector<std::string> nnc::tokenize(const std::string &Text) {
  std::vector<std::string> Tokens;
  size_t N = Text.size();
  for (size_t I = 0; I < N;) {
    unsigned char C = static_cast<unsigned char>(Text[I]);
    if (C <= ' ' || C == 0x7F) { // Spaces and control characters.
      ++I;
      continue;
    }
    if (!isWordByte(C)) {
      Tokens.emplace_back(1, char(C));
      ++I;
      continue;
    }
    std::string &Word = Tokens.emplace_back();
    for (; I < N; ++I) {
      unsigned char D = static_cast<unsigned char>(Text[I]);
      if (D == '\'' && I + 1 < N &&
          isWordByte(static_cast<unsigned char>(Text[I + 1]))) {
        Word += '\''; // Inside a word: a word character is on both sides.
        continue;
      }
      if (!isWordByte(D))
        break;
      Word += (D >= 'A' && D <= 'Z') ? char(D - 'A' + 'a') : char(D);
    }
  }
  return Tokens;
}

void Vocabulary::build(const std::vector<const std::vector<std::string> *> &Rows,
                       size_t Capacity) {
  /// A distinct word of the rows; First is its rank of first appearance.
  struct Entry {
    const std::string *Word; ///< Points into Indices, so kept until rebuilt.
    size_t Count;
    size_t First;
  };
  // Indices maps each word to its Entry while counting.
  std::vector<Entry> Seen;
  Indices.clear();
  for (const std::vector<std::string> *Row : Rows)
    for (const std::string &W : *Row) {
      auto [It, New] = Indices.try_emplace(W, int32_t(Seen.size()));
      if (New)
        Seen.push_back({&It->first, 0, Seen.size()});
      ++Seen[size_t(It->second)].Count;
    }
  Distinct = Seen.size();
  std::sort(Seen.begin(), Seen.end(), [](const Entry &A, const Entry &B) {
    return A.Count != B.Count ? A.Count > B.Count : A.First < B.First;
  });
  size_t Keep = std::min(Seen.size(), std::max<size_t>(Capacity, 2) - 2);
  std::vector<std::string> Kept{"<pad>", "<unk>"};
  Kept.reserve(Keep + 2);
  for (size_t I = 0; I < Keep; ++I)
    Kept.push_back(*Seen[I].Word);
  Seen.clear();
  Indices.clear();
  Indices.reserve(Keep);
  for (size_t I = 0; I < Keep; ++I)
    Indices.emplace(Kept[I + 2], int32_t(I + 2));
  Words = std::move(Kept);
}

int32_t Vocabulary::index(const std::string &Word) const {
  auto It = Indices.find(Word);
  return It == Indices.end() ? Unknown : It->second;
}
