//===- Predict.cpp - The predict command ----------------------------------===//
//
// Part of nnc. The input and output formats are described in docs/abi.md.
//
//===----------------------------------------------------------------------===//

#include "Predict.h"

#include "Cluster.h"
#include "Corpus.h"
#include "CsvRecords.h"
#include "Files.h"
#include "Numbers.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>

using namespace nnc;

namespace {

bool fail(LoadError &Err, const std::string &Where, const std::string &Msg) {
  Err.Where = Where;
  Err.Message = Msg;
  return false;
}

bool readInput(const std::string &Path, std::string &Text, LoadError &Err) {
  bool Opened;
  if (readFile(Path, Text, Opened))
    return true;
  return fail(Err, "",
              std::string(Opened ? "cannot read" : "cannot open") +
                  " input file '" + Path + "': " + std::strerror(errno));
}

/// Adds \p N rows of unknown labels (class -1, value 0) and, for inputs
/// that \p Fill does not write, zeros.
void growSlots(const Manifest &M, Table &T, size_t N) {
  for (size_t S = 0; S < M.Slots.size(); ++S) {
    SlotData &D = T.Slots[S];
    D.decode(); // New values need not be among a coded slot's few.
    if (D.IsClass)
      D.Classes.resize((T.Rows + N) * D.Width, M.Slots[S].IsLabel ? -1 : 0);
    else
      D.Values.resize((T.Rows + N) * D.Width, 0.0);
  }
}

/// One sentence per line: the words of a tagged corpus as written, split at
/// spaces and tabs; a polarity text through tokenize(), as in training.
bool appendSentences(const std::string &Path, const Manifest &M, Table &T,
                     TextRows &Words, LoadError &Err) {
  std::string Text;
  if (!readInput(Path, Text, Err))
    return false;
  if (Text.compare(0, 3, "\xEF\xBB\xBF") == 0)
    Text.erase(0, 3);
  TextRows New;
  size_t Start = 0;
  while (Start < Text.size()) {
    size_t End = std::min(Text.find('\n', Start), Text.size());
    std::string Line = Text.substr(Start, End - Start);
    Start = End + 1;
    if (!Line.empty() && Line.back() == '\r')
      Line.pop_back();
    std::vector<std::string> Sentence;
    if (M.SourceKind == "tagged") {
      size_t P = 0;
      while (P < Line.size()) {
        size_t Q = Line.find_first_of(" \t", P);
        Q = Q == std::string::npos ? Line.size() : Q;
        if (Q > P)
          Sentence.push_back(Line.substr(P, Q - P));
        P = Q + 1;
      }
    } else {
      Sentence = tokenize(Line);
    }
    if (!Sentence.empty())
      New.push_back(std::move(Sentence));
  }
  if (New.empty())
    return fail(Err, Path, "no sentences to predict (one per line)");
  growSlots(M, T, New.size());
  T.Rows += New.size();
  for (auto &S : New)
    Words.push_back(std::move(S));
  return true;
}

/// A CSV with a header. With one float input, every column that is not a
/// label is a feature, in order; with several inputs of one value each
/// (the ratings source's user and item), the columns named after them.
bool appendCsvRows(const std::string &Path, const Manifest &M, Table &T,
                   LoadError &Err) {
  std::string Text;
  if (!readInput(Path, Text, Err))
    return false;
  CsvRecordReader Reader(Text);
  std::vector<std::string> Header, Fields;
  if (!Reader.next(Header))
    return fail(Err, Path,
                Reader.error().empty() ? "the file is empty (a header line "
                                         "is required)"
                                       : Reader.error());
  for (std::string &H : Header)
    H = std::string(trimSpaces(H));

  // (slot, offset in the slot's row) for each column; slot -1: ignored.
  std::vector<std::pair<int, size_t>> Columns(Header.size(), {-1, 0});
  std::vector<std::string> Labels = M.CsvLabels;
  for (const DataSlot &D : M.Slots)
    if (D.IsLabel)
      Labels.push_back(D.Name);
  size_t Inputs = M.numInputs();
  if (Inputs == 1) {
    size_t Features = 0;
    for (size_t C = 0; C < Header.size(); ++C)
      if (std::find(Labels.begin(), Labels.end(), Header[C]) == Labels.end())
        Columns[C] = {0, Features++};
    if (int64_t(Features) != M.Slots[0].width())
      return fail(Err, Path + ":" + std::to_string(Reader.line()),
                  "the file has " + std::to_string(Features) +
                      " feature columns but input '" + M.Slots[0].Name +
                      "' takes " + std::to_string(M.Slots[0].width()) +
                      " values per row");
  } else {
    for (size_t S = 0; S < Inputs; ++S) {
      auto It = std::find(Header.begin(), Header.end(), M.Slots[S].Name);
      if (M.Slots[S].width() != 1 || It == Header.end())
        return fail(Err, Path + ":" + std::to_string(Reader.line()),
                    "expected a column named '" + M.Slots[S].Name +
                        "' for each input (of one value each)");
      Columns[size_t(It - Header.begin())] = {int(S), 0};
    }
  }

  bool Pixels = M.SourceKind == "idx";
  size_t Added = 0;
  while (Reader.next(Fields)) {
    std::string Where = Path + ":" + std::to_string(Reader.line());
    if (Fields.size() != Header.size())
      return fail(Err, Where,
                  "expected " + std::to_string(Header.size()) +
                      " fields, found " + std::to_string(Fields.size()));
    growSlots(M, T, 1);
    for (size_t C = 0; C < Fields.size(); ++C) {
      auto [Slot, Offset] = Columns[C];
      if (Slot < 0)
        continue;
      SlotData &D = T.Slots[size_t(Slot)];
      const DataSlot &Spec = M.Slots[size_t(Slot)];
      double V;
      if (!parseDouble(trimSpaces(Fields[C]), V))
        return fail(Err, Where,
                    "column '" + Header[C] + "': expected a number, found '" +
                        Fields[C] + "'");
      if (Spec.IsIndex) {
        if (V != std::floor(V) || V < 0 || V >= double(Spec.Classes))
          return fail(Err, Where,
                      "column '" + Header[C] + "': expected an index in [0, " +
                          std::to_string(Spec.Classes) + "), found '" +
                          Fields[C] + "'");
        D.Classes[T.Rows * D.Width + Offset] = int32_t(V);
      } else {
        // An IDX source's pixels are bytes, mapped as in training.
        D.Values[T.Rows * D.Width + Offset] =
            Pixels ? M.PixelLow + (M.PixelHigh - M.PixelLow) * V / 255.0 : V;
      }
    }
    ++T.Rows;
    ++Added;
  }
  if (!Reader.error().empty())
    return fail(Err, Path + ":" + std::to_string(Reader.line()),
                Reader.error());
  if (Added == 0)
    return fail(Err, Path, "no rows to predict after the header");
  return true;
}

/// Probabilities from one row of class scores: the scores themselves when
/// the model ends in a softmax, their softmax otherwise (cross-entropy
/// takes logits).
void probabilities(const double *Scores, size_t Classes, bool Softmaxed,
                   std::vector<double> &P) {
  P.assign(Scores, Scores + Classes);
  if (Softmaxed)
    return;
  double Max = *std::max_element(P.begin(), P.end()), Sum = 0;
  for (double &V : P)
    Sum += (V = std::exp(V - Max));
  for (double &V : P)
    V /= Sum;
}

/// A field of the CSV: quoted when it holds a comma, a quote or a line end.
std::string csvField(const std::string &S) {
  if (S.find_first_of(",\"\r\n") == std::string::npos)
    return S;
  std::string Out = "\"";
  for (char C : S)
    Out += C == '"' ? std::string("\"\"") : std::string(1, C);
  return Out + "\"";
}

/// The clusters of one `after kmeans` step.
struct Clustering {
  std::string Column;         ///< "cluster_<value>"
  std::vector<int32_t> Ids;   ///< Per new row: 1 + its nearest centre.
};

/// For each `after kmeans` step, the cluster of each row [First, T.Rows):
/// k-means runs again as training ran it (same rows, the data set's first
/// \p First, same k, restarts and seed, on the same weights, so the same
/// centres, numbered as the trainer prints them), and each new row goes to
/// its nearest centre.
std::vector<Clustering> clusterNewRows(const Manifest &M, Model &Mod, const Table &T,
                                       size_t First) {
  std::vector<Clustering> Result;
  std::vector<size_t> Old(First), New;
  for (size_t I = 0; I < First; ++I)
    Old[I] = I;
  for (size_t I = First; I < T.Rows; ++I)
    New.push_back(I);
  for (const AfterStep &Step : M.After) {
    if (Step.Kind != "kmeans")
      continue;
    int Index = M.probeIndex(Step.arg("value"));
    size_t Dims = size_t(M.Probes[size_t(Index)].width());
    int64_t K = 0, Restarts = 0;
    uint64_t Seed = 0;
    // The manifest parser has checked these fields.
    parseInt64(Step.arg("k"), K);
    parseInt64(Step.arg("restarts"), Restarts);
    parseUInt64(Step.arg("seed"), Seed);
    std::vector<double> X = Mod.probe(Index, T, Old);
    KMeansResult R = kmeans(X.data(), Old.size(), Dims, int(K), int(Restarts), Seed);
    std::vector<double> Y = Mod.probe(Index, T, New);
    Clustering C{"cluster_" + Step.arg("value"), {}};
    for (size_t I = 0; I < New.size(); ++I) {
      double Best = INFINITY;
      int32_t Nearest = 0;
      for (size_t Centre = 0; Centre * Dims < R.Centres.size(); ++Centre) {
        double D = 0;
        for (size_t J = 0; J < Dims; ++J) {
          double Delta = Y[I * Dims + J] - R.Centres[Centre * Dims + J];
          D += Delta * Delta;
        }
        if (D < Best) {
          Best = D;
          Nearest = int32_t(Centre);
        }
      }
      C.Ids.push_back(Nearest + 1);
    }
    Result.push_back(std::move(C));
  }
  return Result;
}

} // namespace

bool nnc::appendPredictRows(const std::string &Path, const Manifest &M,
                            Table &T, TextRows &Words, LoadError &Err) {
  Err.Where.clear();
  if (M.SourceKind == "tagged" || M.SourceKind == "polarity")
    return appendSentences(Path, M, T, Words, Err);
  return appendCsvRows(Path, M, T, Err);
}

bool nnc::writePredictions(const Manifest &M, Model &Mod, const Table &T,
                           const TextRows &Words, size_t First,
                           const std::string &Output, std::string &Err) {
  std::vector<size_t> Rows;
  for (size_t R = First; R < T.Rows; ++R)
    Rows.push_back(R);
  std::vector<double> Values = Mod.predict(T, Rows);
  size_t Width = size_t(M.outputWidth());
  int Label = M.classLabelSlot();
  size_t Classes = Label >= 0 ? size_t(M.Slots[size_t(Label)].Classes) : 0;
  size_t Positions = Classes && Width % Classes == 0 ? Width / Classes : 0;
  bool Softmaxed = !M.Layers.empty() && M.Layers.back().Kind == "softmax";
  auto className = [&](size_t C) {
    const std::vector<std::string> &Names = T.Slots[size_t(Label)].Names;
    return C < Names.size() ? Names[C] : std::to_string(C);
  };
  char Number[32];
  auto number = [&](double V) {
    std::snprintf(Number, sizeof(Number), M.Type == DType::F32 ? "%.9g" : "%.17g",
                  V);
    return std::string(Number);
  };

  std::vector<Clustering> Clusters = clusterNewRows(M, Mod, T, First);
  auto clusterHeader = [&] {
    std::string H;
    for (const Clustering &C : Clusters)
      H += "," + csvField(C.Column);
    return H;
  };
  auto clusterFields = [&](size_t I) {
    std::string F;
    for (const Clustering &C : Clusters)
      F += "," + std::to_string(C.Ids[I]);
    return F;
  };

  std::string Csv;
  std::vector<double> P;
  if (Positions > 1 && !Words.empty()) {
    // A tag per word, one CSV row per word the model saw.
    Csv = "sentence,word,tag,probability\n";
    for (size_t I = 0; I < Rows.size(); ++I) {
      const std::vector<std::string> &Sentence = Words[Rows[I]];
      if (Sentence.size() > Positions)
        std::fprintf(stderr,
                     "note: sentence %zu has %zu words; the model tags the "
                     "first %zu\n",
                     I + 1, Sentence.size(), Positions);
      for (size_t W = 0; W < Sentence.size() && W < Positions; ++W) {
        probabilities(&Values[I * Width + W * Classes], Classes, Softmaxed, P);
        size_t Best = size_t(std::max_element(P.begin(), P.end()) - P.begin());
        Csv += std::to_string(I + 1) + "," + csvField(Sentence[W]) + "," +
               csvField(className(Best)) + "," + number(P[Best]) + "\n";
      }
    }
  } else if (Positions == 1) {
    Csv = "class";
    for (size_t C = 0; C < Classes; ++C)
      Csv += "," + csvField("p_" + className(C));
    Csv += clusterHeader() + "\n";
    for (size_t I = 0; I < Rows.size(); ++I) {
      probabilities(&Values[I * Width], Classes, Softmaxed, P);
      size_t Best = size_t(std::max_element(P.begin(), P.end()) - P.begin());
      Csv += csvField(className(Best));
      for (double V : P)
        Csv += "," + number(V);
      Csv += clusterFields(I) + "\n";
    }
  } else {
    for (size_t J = 0; J < Width; ++J)
      Csv += (J ? "," : "") +
             (Width == 1 ? M.OutputName : M.OutputName + "_" + std::to_string(J));
    Csv += clusterHeader() + "\n";
    for (size_t I = 0; I < Rows.size(); ++I) {
      for (size_t J = 0; J < Width; ++J)
        Csv += (J ? "," : "") + number(Values[I * Width + J]);
      Csv += clusterFields(I) + "\n";
    }
  }

  if (Output.empty()) {
    if (std::fwrite(Csv.data(), 1, Csv.size(), stdout) != Csv.size() ||
        std::fflush(stdout) != 0) {
      Err = std::string("writing the predictions: ") + std::strerror(errno);
      return false;
    }
    return true;
  }
  std::string What;
  if (!writeFileAtomically(Output, {Csv}, What)) {
    Err = "cannot write predictions '" + Output + "': " + What;
    return false;
  }
  return true;
}
