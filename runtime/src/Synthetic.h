//===- Synthetic.h - Data sets generated from a seed ------------*- C++ -*-===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
///
/// \file
/// The generators of the textbooks' synthetic data, driven by the manifest's
/// `source` fields, so that a spec's data need no file.
///
//===----------------------------------------------------------------------===//

#ifndef NNC_RUNTIME_SYNTHETIC_H
#define NNC_RUNTIME_SYNTHETIC_H

#include "Csv.h"
#include "Dataset.h"
#include "Manifest.h"

namespace nnc {

/// `linear`: rows of one feature x and one target y = slope * x + intercept
/// + noise. x is `uniform:LOW:HIGH` (drawn) or `linspace:LOW:HIGH` (evenly
/// spaced, both ends included); noise is `none`, `normal:STD` or
/// `uniform:LOW:HIGH`. Feeds one input and one float label of width 1.
bool generateLinear(const Manifest &M, Table &T, LoadError &Err);

/// `blobs`: Gaussian clusters, as scikit-learn's make_blobs. Feeds one input
/// of `features` values and, when the model declares one, a class label
/// holding each row's blob.
bool generateBlobs(const Manifest &M, Table &T, LoadError &Err);

/// `ratings`: every (user, item) pair once, in user-major order, rated
/// sigmoid(u . v) + N(0, noise^2) by hidden factors u, v ~ N(0, 1/rank) of
/// `rank` values each (users' factors drawn first, then items'). Feeds two
/// index inputs, the user and the item, and one float label, the rating.
bool generateRatings(const Manifest &M, Table &T, LoadError &Err);

} // namespace nnc

#endif // NNC_RUNTIME_SYNTHETIC_H
