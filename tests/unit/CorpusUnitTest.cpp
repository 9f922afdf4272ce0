//===- CorpusUnitTest.cpp - Unit tests of the text corpus readers ---------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// Tests of runtime/src/Corpus.cpp: the tagged-corpus and polarity-CSV
// readers on the repository's toy file and slices and on small files written
// here (errors, line ends), tokenize(), and the vocabulary. No framework:
// CHECK prints the failing condition with its file and line and counts it;
// the exit status is 1 when any check failed.
//
// usage: nnc-corpus-unittest DATA-DIR SCRATCH-DIR
// DATA-DIR is specs/data; SCRATCH-DIR an existing folder for the small files.
// Where DATA-DIR/pattern/ holds the full corpora (scripts/fetch-data.sh),
// they are read too, and the time that takes is printed.
//
//===----------------------------------------------------------------------===//

#include "Corpus.h"
#include "Check.h"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace nnc;

/// CHECK(A == B) for strings, printing both when they differ.
#define CHECK_EQ_STR(A, B)                                                     \
  do {                                                                         \
    std::string Left_ = (A), Right_ = (B);                                     \
    if (Left_ != Right_) {                                                     \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s == %s\n  '%s'\n  '%s'\n",  \
                   __FILE__, __LINE__, #A, #B, Left_.c_str(),                  \
                   Right_.c_str());                                            \
      ++Failures;                                                              \
    }                                                                          \
  } while (0)

namespace {

std::string Data, Scratch;

/// Writes \p Contents to SCRATCH-DIR/\p Name and returns its path.
std::string writeFile(const std::string &Name, const std::string &Contents) {
  std::string Path = Scratch + "/" + Name;
  FILE *F = std::fopen(Path.c_str(), "wb");
  if (!F) {
    std::fprintf(stderr, "cannot write %s: %s\n", Path.c_str(),
                 std::strerror(errno));
    std::exit(2);
  }
  std::fwrite(Contents.data(), 1, Contents.size(), F);
  std::fclose(F);
  return Path;
}

bool fileExists(const std::string &Path) {
  FILE *F = std::fopen(Path.c_str(), "rb");
  if (F)
    std::fclose(F);
  return F != nullptr;
}

std::vector<std::string> strings(std::initializer_list<const char *> L) {
  return std::vector<std::string>(L.begin(), L.end());
}

std::set<std::string> distinctTags(const std::vector<TaggedSentence> &C) {
  std::set<std::string> Tags;
  for (const TaggedSentence &S : C)
    Tags.insert(S.Tags.begin(), S.Tags.end());
  return Tags;
}

size_t tokenCount(const std::vector<TaggedSentence> &C) {
  size_t N = 0;
  for (const TaggedSentence &S : C) {
    CHECK(S.Words.size() == S.Tags.size());
    CHECK(!S.Words.empty());
    N += S.Words.size();
  }
  return N;
}

/// The error of reading \p Contents as a tagged corpus; "" when it reads.
std::string taggedError(const std::string &Name, const std::string &Contents,
                        std::string *Path = nullptr) {
  std::string P = writeFile(Name, Contents);
  if (Path)
    *Path = P;
  std::vector<TaggedSentence> C;
  std::string Err;
  bool Ok = readTaggedCorpus(P, C, Err);
  CHECK(Ok == Err.empty());
  return Err;
}

std::string polarityError(const std::string &Name, const std::string &Contents,
                          std::string *Path = nullptr) {
  std::string P = writeFile(Name, Contents);
  if (Path)
    *Path = P;
  std::vector<LabelledText> C;
  std::string Err;
  bool Ok = readPolarityCsv(P, C, Err);
  CHECK(Ok == Err.empty());
  return Err;
}

void testToy() {
  std::vector<TaggedSentence> C;
  std::string Err;
  CHECK(readTaggedCorpus(Data + "/toy-tagged.txt", C, Err));
  CHECK_EQ_STR(Err, "");
  CHECK(C.size() == 2);
  CHECK(tokenCount(C) == 8);
  CHECK(distinctTags(C) ==
        std::set<std::string>({"DET", "NOUN", "VERB", "ADV", "ADJ"}));
  std::set<std::string> Words;
  for (const TaggedSentence &S : C)
    Words.insert(S.Words.begin(), S.Words.end());
  CHECK(Words.size() == 7);
  if (C.size() == 2) {
    CHECK(C[0].Words == strings({"the", "dog", "runs", "fast"}));
    CHECK(C[0].Tags == strings({"DET", "NOUN", "VERB", "ADV"}));
    CHECK(C[1].Words == strings({"the", "big", "cat", "sleeps"}));
    CHECK(C[1].Tags == strings({"DET", "ADJ", "NOUN", "VERB"}));
  }
}

void testOancSlice() {
  std::vector<TaggedSentence> C;
  std::string Err;
  CHECK(readTaggedCorpus(Data + "/oanc-slice.txt", C, Err));
  CHECK_EQ_STR(Err, "");
  CHECK(C.size() == 400);
  CHECK(tokenCount(C) == 7618);
  CHECK(distinctTags(C).size() == 43);
  if (C.empty())
    return;
  // Has/VBZ the/DT Internet/NN ...: case kept.
  CHECK(C[0].Words.size() == 14);
  CHECK_EQ_STR(C[0].Words[0], "Has");
  CHECK_EQ_STR(C[0].Tags[0], "VBZ");
  CHECK_EQ_STR(C[0].Words[4], "its");
  CHECK_EQ_STR(C[0].Tags[4], "PRP$");
  CHECK_EQ_STR(C[0].Words.back(), "?");
  CHECK_EQ_STR(C[0].Tags.back(), ".");
}

void testPolaritySlice() {
  std::vector<LabelledText> C;
  std::string Err;
  CHECK(readPolarityCsv(Data + "/polarity-slice.csv", C, Err));
  CHECK_EQ_STR(Err, "");
  CHECK(C.size() == 400);
  std::map<std::string, size_t> Labels;
  for (const LabelledText &T : C) {
    ++Labels[T.Label];
    CHECK(!T.Words.empty());
  }
  CHECK(Labels.size() == 2 && Labels["1"] == 200 && Labels["-1"] == 200);
  if (C.size() != 400)
    return;
  CHECK_EQ_STR(C[0].Label, "1");
  CHECK_EQ_STR(C[399].Label, "-1");
  // "the rock is destined to be the 21st century's new "" conan "" and ...
  std::vector<std::string> Head(C[0].Words.begin(), C[0].Words.begin() + 11);
  CHECK(Head == strings({"the", "rock", "is", "destined", "to", "be", "the",
                         "21st", "century's", "new", "\""}));
  CHECK_EQ_STR(C[0].Words.back(), ".");
}

/// The full corpora, where scripts/fetch-data.sh has put them.
void testFullCorpora() {
  std::string Oanc = Data + "/pattern/tagged-en-oanc.txt";
  std::string Polarity = Data + "/pattern/polarity-en-pang-lee2.csv";
  if (!fileExists(Oanc) || !fileExists(Polarity)) {
    std::printf("full corpora not in %s/pattern: skipped\n", Data.c_str());
    return;
  }
  using Clock = std::chrono::steady_clock;
  std::vector<TaggedSentence> C;
  std::string Err;
  auto Start = Clock::now();
  CHECK(readTaggedCorpus(Oanc, C, Err));
  double TaggedMs =
      std::chrono::duration<double, std::milli>(Clock::now() - Start).count();
  CHECK_EQ_STR(Err, "");
  CHECK(C.size() == 20000);
  CHECK(tokenCount(C) == 360524);
  CHECK(distinctTags(C).size() == 48);
  size_t Longest = 0;
  for (const TaggedSentence &S : C)
    Longest = std::max(Longest, S.Words.size());
  CHECK(Longest == 220);
  std::vector<const std::vector<std::string> *> Train;
  for (size_t I = 0; I < C.size() * 9 / 10; ++I)
    Train.push_back(&C[I].Words);
  Vocabulary V;
  Start = Clock::now();
  V.build(Train, Vocabulary::NoCap);
  double VocabMs =
      std::chrono::duration<double, std::milli>(Clock::now() - Start).count();
  CHECK(V.distinctSeen() == 31141);
  CHECK(V.size() == 31143);

  std::vector<LabelledText> P;
  Start = Clock::now();
  CHECK(readPolarityCsv(Polarity, P, Err));
  double PolarityMs =
      std::chrono::duration<double, std::milli>(Clock::now() - Start).count();
  CHECK_EQ_STR(Err, "");
  CHECK(P.size() == 4000);
  std::map<std::string, size_t> Labels;
  for (const LabelledText &T : P)
    ++Labels[T.Label];
  CHECK(Labels.size() == 2 && Labels["1"] == 2000 && Labels["-1"] == 2000);
  std::printf("full corpora: %zu sentences in %.1f ms, vocabulary of the first "
              "90%% (%zu words) in %.1f ms; %zu polarity records in %.1f ms\n",
              C.size(), TaggedMs, V.distinctSeen(), VocabMs, P.size(),
              PolarityMs);
}

void testTaggedFormat() {
  std::vector<TaggedSentence> C;
  std::string Err;
  // The tag follows the last '/'; BOM, CRLF, blank lines, tabs and a last
  // line without a line end.
  std::string P = writeFile("slashes.txt",
                            "\xEF\xBB\xBF"
                            "1/2/CD and/CC //SYM a//SYM\r\n"
                            "\r\n"
                            "   \n"
                            "\tDog/NN\t \tbarks/VBZ  \r\n"
                            "x/NN|JJ");
  CHECK(readTaggedCorpus(P, C, Err));
  CHECK_EQ_STR(Err, "");
  CHECK(C.size() == 3);
  if (C.size() == 3) {
    CHECK(C[0].Words == strings({"1/2", "and", "/", "a/"}));
    CHECK(C[0].Tags == strings({"CD", "CC", "SYM", "SYM"}));
    CHECK(C[1].Words == strings({"Dog", "barks"}));
    CHECK(C[1].Tags == strings({"NN", "VBZ"}));
    CHECK(C[2].Words == strings({"x"}));
    CHECK(C[2].Tags == strings({"NN|JJ"}));
  }
  // Appends.
  CHECK(readTaggedCorpus(Data + "/toy-tagged.txt", C, Err));
  CHECK(C.size() == 5);

  // Bad tokens, named with their line (blank lines and CRLF counted).
  std::string Path;
  CHECK_EQ_STR(taggedError("notag.txt", "the/DT dog/NN\n\ncat sat/VBD\n", &Path),
               Path + ":3: token 'cat' has no '/' (expected word/TAG)");
  CHECK_EQ_STR(taggedError("noword.txt", "a/DT\r\nb/NN /NN\r\n", &Path),
               Path + ":2: token '/NN' has an empty word (expected word/TAG)");
  CHECK_EQ_STR(taggedError("notag2.txt", "a/DT\nb/NN\nc/NN dog/", &Path),
               Path + ":3: token 'dog/' has an empty tag (expected word/TAG)");
  CHECK_EQ_STR(taggedError("slash.txt", "\xEF\xBB\xBF/\n", &Path),
               Path + ":1: token '/' has an empty word (expected word/TAG)");

  // No sentences.
  const char *NoSentences =
      ": no sentences (expected word/TAG tokens, one sentence a line)";
  CHECK_EQ_STR(taggedError("empty.txt", "", &Path), Path + NoSentences);
  CHECK_EQ_STR(taggedError("blank.txt", "\xEF\xBB\xBF\r\n \n\t\n", &Path),
               Path + NoSentences);

  // A file that is not there, and a folder.
  std::string Missing = Scratch + "/missing.txt";
  CHECK(!readTaggedCorpus(Missing, C, Err));
  CHECK_EQ_STR(Err, "cannot open " + Missing + ": " + std::strerror(ENOENT));
  CHECK(!readTaggedCorpus(Scratch, C, Err));
  CHECK_EQ_STR(Err, "cannot read " + Scratch + ": " + std::strerror(EISDIR));
}

void testPolarityFormat() {
  std::vector<LabelledText> C;
  std::string Err;
  // Quoted fields with "" and a line feed inside, CRLF between records, an
  // unquoted record, and a last record without a line end.
  std::string P = writeFile("polarity.csv",
                            "\xEF\xBB\xBF"
                            "\"1\",\"a \"\"fine\"\" film . \n\"\r\n"
                            "\r\n"
                            " -1 ,Don't GO!\r\n"
                            "\"pos\",\"two\nlines\n\"");
  CHECK(readPolarityCsv(P, C, Err));
  CHECK_EQ_STR(Err, "");
  CHECK(C.size() == 3);
  if (C.size() == 3) {
    CHECK_EQ_STR(C[0].Label, "1");
    CHECK(C[0].Words == strings({"a", "\"", "fine", "\"", "film", "."}));
    CHECK_EQ_STR(C[1].Label, "-1");
    CHECK(C[1].Words == strings({"don't", "go", "!"}));
    CHECK_EQ_STR(C[2].Label, "pos");
    CHECK(C[2].Words == strings({"two", "lines"}));
  }

  // Errors name the line where the record starts.
  std::string Path;
  CHECK_EQ_STR(
      polarityError("fields.csv", "\"1\",\"a\nb\"\r\n\"-1\",\"c\",\"d\"\r\n",
                    &Path),
      Path + ":3: expected 2 fields (label, text), found 3");
  CHECK_EQ_STR(polarityError("onefield.csv", "1,ok\n\njust text\n", &Path),
               Path + ":3: expected 2 fields (label, text), found 1");
  CHECK_EQ_STR(polarityError("nolabel.csv", "1,ok\n  ,text\n", &Path),
               Path + ":2: empty label");
  CHECK_EQ_STR(polarityError("nowords.csv", "1,ok\n-1,\" \n\"\n", &Path),
               Path + ":2: the text has no words");
  CHECK_EQ_STR(polarityError("unterminated.csv", "1,ok\n-1,\"open\n\n", &Path),
               Path + ":2: unterminated quoted field");
  CHECK_EQ_STR(polarityError("afterquote.csv", "1,\"a\"b\n", &Path),
               Path + ":1: unexpected character after a closing quote");
  CHECK_EQ_STR(polarityError("empty.csv", "\xEF\xBB\xBF\r\n", &Path),
               Path + ": no records (expected label,text lines)");

  std::string Missing = Scratch + "/missing.csv";
  CHECK(!readPolarityCsv(Missing, C, Err));
  CHECK_EQ_STR(Err, "cannot open " + Missing + ": " + std::strerror(ENOENT));
}

void testTokenize() {
  CHECK(tokenize("") == strings({}));
  CHECK(tokenize(" \t\r\n") == strings({}));
  CHECK(tokenize("The Rock's NEW film!") ==
        strings({"the", "rock's", "new", "film", "!"}));
  CHECK(tokenize("don't 'quoted' students' rock'n'roll") ==
        strings({"don't", "'", "quoted", "'", "students", "'",
                 "rock'n'roll"}));
  CHECK(tokenize("co-writer/director, 3.5 (x)...") ==
        strings({"co", "-", "writer", "/", "director", ",", "3", ".", "5",
                 "(", "x", ")", ".", ".", "."}));
  CHECK(tokenize("a''b '' ' x") ==
        strings({"a", "'", "'", "b", "'", "'", "'", "x"}));
  // UTF-8 bytes are word characters and are not lower-cased.
  CHECK(tokenize("Ladr\xC3\xB3n \xC3\x89t\xC3\xA9 a \xE2\x80\x94 b") ==
        strings({"ladr\xC3\xB3n", "\xC3\x89t\xC3\xA9", "a", "\xE2\x80\x94",
                 "b"}));
  CHECK(tokenize("x\x01y\x7Fz") == strings({"x", "y", "z"}));
}

void testVocabulary() {
  Vocabulary Empty;
  CHECK(Empty.size() == 2);
  CHECK(Empty.distinctSeen() == 0);
  CHECK_EQ_STR(Empty.word(Vocabulary::Pad), "<pad>");
  CHECK_EQ_STR(Empty.word(Vocabulary::Unknown), "<unk>");
  CHECK(Empty.index("the") == Vocabulary::Unknown);

  // Counts: b 3, a 2, c 2, d 1, e 1, f 1, first appearing in the order a, b,
  // c, d, e, f: b first, then the ties in order of first appearance.
  std::vector<std::string> R1 = strings({"a", "b", "c", "b"});
  std::vector<std::string> R2 = strings({"d", "c", "b", "a", "e"});
  std::vector<std::string> R3 = strings({"f"});
  std::vector<const std::vector<std::string> *> Rows{&R1, &R2, &R3};
  Vocabulary V;
  V.build(Rows, Vocabulary::NoCap);
  CHECK(V.size() == 8);
  CHECK(V.distinctSeen() == 6);
  std::vector<std::string> Order;
  for (size_t I = 0; I < V.size(); ++I)
    Order.push_back(V.word(int32_t(I)));
  CHECK(Order == strings({"<pad>", "<unk>", "b", "a", "c", "d", "e", "f"}));
  for (size_t I = 2; I < V.size(); ++I)
    CHECK(V.index(V.word(int32_t(I))) == int32_t(I));
  CHECK(V.index("zzz") == Vocabulary::Unknown);
  CHECK(V.index("<pad>") == Vocabulary::Unknown);
  CHECK(V.index("B") == Vocabulary::Unknown); // Case matters.

  // The cap counts the reserved entries; the rest map to unknown.
  V.build(Rows, 5);
  CHECK(V.size() == 5);
  CHECK(V.distinctSeen() == 6);
  CHECK(V.index("b") == 2 && V.index("a") == 3 && V.index("c") == 4);
  CHECK(V.index("d") == Vocabulary::Unknown);
  CHECK(V.index("f") == Vocabulary::Unknown);
  V.build(Rows, 0);
  CHECK(V.size() == 2);
  CHECK(V.index("b") == Vocabulary::Unknown);
  V.build(Rows, 100);
  CHECK(V.size() == 8);

  // A literal "<unk>" in the rows is a word like any other; rebuilding
  // replaces the old words.
  std::vector<std::string> R4 = strings({"<unk>", "x", "x"});
  V.build({&R4}, Vocabulary::NoCap);
  CHECK(V.size() == 4);
  CHECK(V.distinctSeen() == 2);
  CHECK(V.index("x") == 2);
  CHECK(V.index("<unk>") == 3);
  CHECK_EQ_STR(V.word(3), "<unk>");
  CHECK(V.index("b") == Vocabulary::Unknown);
  V.build({}, Vocabulary::NoCap);
  CHECK(V.size() == 2 && V.distinctSeen() == 0);
}

} // namespace

int main(int Argc, char **Argv) {
  if (Argc != 3) {
    std::fprintf(stderr, "usage: %s DATA-DIR SCRATCH-DIR\n", Argv[0]);
    return 2;
  }
  Data = Argv[1];
  Scratch = Argv[2];
  testToy();
  testOancSlice();
  testPolaritySlice();
  testFullCorpora();
  testTaggedFormat();
  testPolarityFormat();
  testTokenize();
  testVocabulary();
  if (Failures) {
    std::fprintf(stderr, "%d check(s) failed\n", Failures);
    return 1;
  }
  std::printf("all corpus unit tests passed\n");
  return 0;
}
