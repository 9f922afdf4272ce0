//===- Text.cpp - Text corpora as tables of token indices -----------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//

#include "Text.h"
#include "Corpus.h"

#include <algorithm>
#include <map>

using namespace nnc;

/// Numbers the distinct names of \p Labels in sorted order into \p Names;
/// false when there are more than \p Classes.
static bool numberClasses(const std::vector<const std::string *> &Labels,
                          int64_t Classes, std::vector<std::string> &Names,
                          std::map<std::string, int32_t> &Index) {
  for (const std::string *L : Labels)
    Index.emplace(*L, 0);
  if (int64_t(Index.size()) > Classes)
    return false;
  for (auto &[Name, I] : Index) {
    I = int32_t(Names.size());
    Names.push_back(Name);
  }
  return true;
}

bool nnc::loadText(const std::string &Path, const Manifest &M, Table &T,
                   TextRows &Words, LoadError &Err) {
  Err.Where.clear();
  bool Tagged = M.SourceKind == "tagged";
  if (M.Slots.size() != 2 || !M.Slots[0].IsIndex || !M.Slots[1].IsClass ||
      (Tagged && M.Slots[1].width() != M.Slots[0].width())) {
    Err.Message = "a " + M.SourceKind + " source feeds one index sequence "
                  "input and one class label";
    return false;
  }
  const DataSlot &Label = M.Slots[1];
  size_t Length = size_t(Label.width());
  std::vector<const std::string *> Names;
  std::vector<std::vector<const std::string *>> RowLabels;
  std::vector<TaggedSentence> Sentences;
  std::vector<LabelledText> Texts;
  if (Tagged ? !readTaggedCorpus(Path, Sentences, Err.Message)
             : !readPolarityCsv(Path, Texts, Err.Message))
    return false;
  for (TaggedSentence &S : Sentences) {
    RowLabels.emplace_back();
    for (size_t I = 0; I < S.Tags.size() && I < Length; ++I) {
      Names.push_back(&S.Tags[I]);
      RowLabels.back().push_back(&S.Tags[I]);
    }
    Words.push_back(std::move(S.Words));
  }
  for (LabelledText &L : Texts) {
    Names.push_back(&L.Label);
    RowLabels.push_back({&L.Label});
    Words.push_back(std::move(L.Words));
  }

  T.Rows = Words.size();
  T.Slots.assign(2, SlotData());
  SlotData &X = T.Slots[0], &Y = T.Slots[1];
  X.IsClass = Y.IsClass = true;
  X.Width = size_t(M.Slots[0].width());
  Y.Width = Length;
  std::map<std::string, int32_t> Index;
  if (!numberClasses(Names, Label.Classes, Y.Names, Index)) {
    Err.Where = Path;
    Err.Message = "the data hold " + std::to_string(Index.size()) + " " +
                  (Tagged ? "tags" : "labels") + " but label '" + Label.Name +
                  "' has " + std::to_string(Label.Classes) + " classes";
    return false;
  }
  Y.Classes.assign(T.Rows * Length, -1);
  for (size_t R = 0; R < T.Rows; ++R)
    for (size_t I = 0; I < RowLabels[R].size(); ++I)
      Y.Classes[R * Length + I] = Index.at(*RowLabels[R][I]);
  return true;
}

VocabularyInfo nnc::encodeWords(const TextRows &Words, const Manifest &M,
                                const std::vector<size_t> &TrainRows, Table &T) {
  std::vector<const std::vector<std::string> *> Training;
  for (size_t R : TrainRows)
    Training.push_back(&Words[R]);
  Vocabulary V;
  V.build(Training, size_t(M.Slots[0].Classes));
  SlotData &X = T.Slots[0];
  X.Classes.assign(T.Rows * X.Width, Vocabulary::Pad);
  VocabularyInfo Info;
  for (size_t R = 0; R < T.Rows; ++R) {
    Info.Cut += Words[R].size() > X.Width;
    for (size_t I = 0; I < Words[R].size() && I < X.Width; ++I)
      X.Classes[R * X.Width + I] = V.index(Words[R][I]);
  }
  X.Names.clear();
  for (size_t I = 0; I < V.size(); ++I)
    X.Names.push_back(V.word(int32_t(I)));
  Info.Seen = V.distinctSeen();
  Info.Kept = V.size();
  return Info;
}
