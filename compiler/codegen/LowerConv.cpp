//===- LowerConv.cpp - Convolutions and pooling ---------------------------===//
//
// Part of nnc.
//
//===----------------------------------------------------------------------===//
//
// Convolutions and max-pooling, forward and backward: on the CPU, column
// matrices or Winograd's F(2x2, 3x3) per image; on the GPU, tiled products
// of the image patches.
//
//===----------------------------------------------------------------------===//

#include "codegen/GraphLowering.h"

#include "llvm/Analysis/VectorUtils.h"

#include <algorithm>

namespace nnc::lowering {

std::pair<Value *, Value *> GraphLowering::validRange(Value *k, int64_t inExtent, int64_t outExtent,
                                                      int64_t stride, int64_t pad) {
  // begin = max(0, ceil((pad - k) / stride)); a negative quotient truncates
  // to at most 0, which the max turns into 0.
  Value *low = B.CreateSDiv(B.CreateAdd(B.CreateSub(i64(pad), k), i64(stride - 1)), i64(stride));
  Value *begin = B.CreateBinaryIntrinsic(llvm::Intrinsic::smax, low, i64(0));
  // end = min(outExtent, floor((in - 1 + pad - k) / stride) + 1), or 0 when
  // the numerator is negative (no valid position).
  Value *num = B.CreateSub(i64(inExtent - 1 + pad), k);
  Value *high = B.CreateAdd(B.CreateSDiv(num, i64(stride)), i64(1));
  high = B.CreateBinaryIntrinsic(llvm::Intrinsic::smin, high, i64(outExtent));
  Value *end = B.CreateSelect(B.CreateICmpSLT(num, i64(0)), i64(0), high);
  return {begin, end};
}

void GraphLowering::columnsOf(const Node *conv, const std::vector<int64_t> &in,
                              const std::vector<int64_t> &out, Value *image,
                              const std::function<void(Value *, Value *)> &body) {
  const ir::Attrs &a = conv->A;
  int64_t C = in[1], H = in[2], W = in[3], OH = out[2], OW = out[3];
  // Channels write to rows of their own in the column matrix, and read
  // from (or, col2im, add into) planes of their own in the image.
  parallelFor(i64(C), [&](Value *c) {
    Value *plane = B.CreateAdd(image, B.CreateMul(c, i64(H * W)));
    forRange(i64(a.KernelH), [&](Value *kh) {
      auto [ohBegin, ohEnd] = validRange(kh, H, OH, a.Stride, a.Pad);
      forRange(i64(a.KernelW), [&](Value *kw) {
        auto [owBegin, owEnd] = validRange(kw, W, OW, a.Stride, a.Pad);
        Value *row = B.CreateAdd(B.CreateMul(c, i64(a.KernelH * a.KernelW)),
                                 B.CreateAdd(B.CreateMul(kh, i64(a.KernelW)), kw));
        Value *rowStart = B.CreateMul(row, i64(OH * OW));
        forRange(ohBegin, ohEnd, [&](Value *oh) {
          Value *ih = B.CreateSub(B.CreateAdd(B.CreateMul(oh, i64(a.Stride)), kh), i64(a.Pad));
          Value *colRow = B.CreateAdd(rowStart, B.CreateMul(oh, i64(OW)));
          Value *inRow =
              B.CreateSub(B.CreateAdd(B.CreateAdd(plane, B.CreateMul(ih, i64(W))), kw), i64(a.Pad));
          forRange(
              owBegin, owEnd,
              [&](Value *ow) {
                body(B.CreateAdd(colRow, ow), B.CreateAdd(inRow, B.CreateMul(ow, i64(a.Stride))));
              },
              /*rolled=*/true);
        });
      });
    });
  });
}

Value *GraphLowering::columnBuffer(const Node *n, Value *group) {
  Value *start = B.CreateAdd(i64(Scratch.at(n)), B.CreateMul(group, i64(columnBytes(n))));
  return B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, start);
}

void GraphLowering::fillColumns(const Node *n, const Node *x, const std::vector<int64_t> &out,
                                Value *img, Value *col) {
  const std::vector<int64_t> &in = x->Ty.Dims;
  llvm::Type *ft = elemType(n->Ty.Elem);
  // Without padding, every entry is some pixel of the image.
  if (n->A.Pad > 0)
    zeroBytes(col, columnElements(n) * ir::byteSize(n->Ty.Elem));
  Value *image = B.CreateMul(img, i64(in[1] * in[2] * in[3]));
  columnsOf(n, in, out, image, [&](Value *c, Value *i) {
    B.CreateStore(load(x, i), B.CreateInBoundsGEP(ft, col, c));
  });
}

Value *GraphLowering::winogradFilterBuffer(const Node *n) {
  return B.CreateInBoundsGEP(B.getInt8Ty(), Workspace,
                             i64(Scratch.at(n) + ImageGroups * columnBytes(n)));
}

void GraphLowering::winogradFilter(const Node *n) {
  // U = G g G^T for each 3x3 filter g, G = [1 0 0; 1/2 1/2 1/2;
  // 1/2 -1/2 1/2; 0 0 1]: 16 matrices [Out, In], element (a, b) of every
  // filter's U in matrix 4a + b.
  WinogradShape s = winogradShape(n);
  const Node *w = n->Operands[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  Value *u = winogradFilterBuffer(n);
  Value *half = llvm::ConstantFP::get(ft, 0.5);
  // Before an image chain, the filter (a parameter) may come later in the
  // order of the nodes than the chain's first.
  if (!Slots.count(w) && ir::opInfo(w->Op).Category == ir::OpCategory::Leaf)
    lowerLeaf(w);
  parallelFor(i64(s.Out * s.In), [&](Value *pair) {
    Value *o = B.CreateUDiv(pair, i64(s.In)), *c = B.CreateURem(pair, i64(s.In));
    // w is [O, C, 3, 3]. The input's gradient takes filter (o, c) from
    // w[c, o], turned by 180 degrees.
    bool turned = n->Op == OpCode::Conv2DGradInput;
    Value *first = turned ? B.CreateMul(B.CreateAdd(B.CreateMul(c, i64(s.Out)), o), i64(9))
                          : B.CreateMul(pair, i64(9));
    auto g = [&](int kh, int kw) {
      return load(w, B.CreateAdd(first, i64(turned ? (2 - kh) * 3 + (2 - kw) : kh * 3 + kw)));
    };
    auto transform = [&](Value *v0, Value *v1, Value *v2) {
      Value *even = fadd(v0, v2);
      return std::array<Value *, 4>{v0, B.CreateFMul(half, fadd(even, v1)),
                                    B.CreateFMul(half, fsub(even, v1)), v2};
    };
    std::array<std::array<Value *, 4>, 3> byColumn; // G g, column by column
    for (int kw = 0; kw < 3; ++kw)
      byColumn[kw] = transform(g(0, kw), g(1, kw), g(2, kw));
    for (int a = 0; a < 4; ++a) {
      std::array<Value *, 4> row = transform(byColumn[0][a], byColumn[1][a], byColumn[2][a]);
      for (int b = 0; b < 4; ++b)
        B.CreateStore(
            row[b], B.CreateInBoundsGEP(ft, u, B.CreateAdd(pair, i64((a * 4 + b) * s.Out * s.In))));
    }
  });
}

Value *GraphLowering::planeRow(const Node *n, Value *plane, Value *r, int64_t height, int64_t width,
                               llvm::ArrayRef<int> mask) {
  // A row outside is read from row 0 (always valid memory), then zeroed.
  Value *inside = B.CreateICmpULT(r, i64(height));
  Value *row =
      loadVector(n, B.CreateAdd(plane, B.CreateMul(B.CreateSelect(inside, r, i64(0)), i64(width))),
                 unsigned(width));
  Value *zero = llvm::Constant::getNullValue(row->getType());
  return B.CreateShuffleVector(B.CreateSelect(inside, row, zero), zero, mask);
}

void GraphLowering::winogradInput(const Node *n, Value *img, Value *v) {
  WinogradShape s = winogradShape(n);
  const Node *x = n->Operands[0];
  llvm::Type *ft = elemType(n->Ty.Elem);
  int64_t T = s.tiles();
  llvm::Align align(ir::byteSize(n->Ty.Elem));
  // The input's rows, padded: column j of the padded row is column j - Pad
  // of the image, or zero.
  std::vector<int> padMask;
  for (int64_t j = 0; j < s.padded(); ++j)
    padMask.push_back(int(j - s.Pad >= 0 && j - s.Pad < s.W ? j - s.Pad : s.W));
  Value *image = B.CreateMul(img, i64(s.In * s.H * s.W));
  parallelFor(i64(s.In), [&](Value *c) {
    Value *plane = B.CreateAdd(image, B.CreateMul(c, i64(s.H * s.W)));
    forRange(i64(s.TH), [&](Value *ty) {
      std::array<std::array<Value *, 4>, 4> t; // B^T applied along each of 4 rows
      for (int i = 0; i < 4; ++i) {
        Value *r = B.CreateAdd(B.CreateMul(ty, i64(2)), i64(i - s.Pad));
        Value *row = planeRow(x, plane, r, s.H, s.W, padMask);
        std::array<Value *, 4> d;
        for (int j = 0; j < 4; ++j)
          d[j] = B.CreateShuffleVector(row, llvm::createStrideMask(j, 2, unsigned(s.TW)));
        t[i] = {fsub(d[0], d[2]), fadd(d[1], d[2]), fsub(d[2], d[1]), fsub(d[1], d[3])};
      }
      Value *first = B.CreateAdd(B.CreateMul(c, i64(T)), B.CreateMul(ty, i64(s.TW)));
      for (int b = 0; b < 4; ++b) {
        Value *col[4] = {fsub(t[0][b], t[2][b]), fadd(t[1][b], t[2][b]), fsub(t[2][b], t[1][b]),
                         fsub(t[1][b], t[3][b])};
        for (int a = 0; a < 4; ++a)
          B.CreateAlignedStore(
              col[a], elementAt(ft, v, B.CreateAdd(first, i64((a * 4 + b) * s.In * T))), align);
      }
    });
  });
}

void GraphLowering::winogradImage(const Node *n, Value *img, Value *group) {
  // V = B^T d B for each 4x4 input tile d (tiles 2 apart), B^T = [1 0 -1 0;
  // 0 1 1 0; 0 -1 1 0; 0 1 0 -1]; for each of the 16 elements, the product
  // [Out, In] x [In, tiles] of U's matrix and V's; then each output tile
  // is A^T m A, A^T = [1 1 1 0; 0 1 -1 -1]. A row of tiles is one vector:
  // the input rows are loaded whole and the tiles' columns are shuffles.
  WinogradShape s = winogradShape(n);
  llvm::Type *ft = elemType(n->Ty.Elem);
  int64_t size = ir::byteSize(n->Ty.Elem), T = s.tiles();
  llvm::Align align(size);
  Value *v = columnBuffer(n, group);
  Value *m = B.CreateInBoundsGEP(B.getInt8Ty(), v, i64(alignUp(16 * s.In * T * size)));
  auto *tileRow = llvm::FixedVectorType::get(ft, unsigned(s.TW));

  winogradInput(n, img, v);

  GemmShape shape{false, false, false, T, ft, VectorBits};
  Value *u = winogradFilterBuffer(n);
  forRange(i64(16), [&](Value *e) {
    gemm(shape, elementAt(ft, u, B.CreateMul(e, i64(s.Out * s.In))),
         elementAt(ft, v, B.CreateMul(e, i64(s.In * T))),
         elementAt(ft, m, B.CreateMul(e, i64(s.Out * T))), i64(s.Out), i64(s.In));
  });

  std::vector<int> firstColumns;
  for (int64_t j = 0; j < s.OW; ++j)
    firstColumns.push_back(int(j));
  Value *out = B.CreateInBoundsGEP(ft, slotOf(n).Ptr, B.CreateMul(img, i64(s.Out * s.OH * s.OW)));
  parallelFor(i64(s.Out), [&](Value *o) {
    forRange(i64(s.TH), [&](Value *ty) {
      Value *first = B.CreateAdd(B.CreateMul(o, i64(T)), B.CreateMul(ty, i64(s.TW)));
      auto tile = [&](int a, int b) {
        return B.CreateAlignedLoad(
            tileRow, elementAt(ft, m, B.CreateAdd(first, i64((a * 4 + b) * s.Out * T))), align);
      };
      for (int i = 0; i < 2; ++i) {
        Value *byColumn[4];
        for (int b = 0; b < 4; ++b)
          byColumn[b] = i == 0 ? fadd(fadd(tile(0, b), tile(1, b)), tile(2, b))
                               : fsub(fsub(tile(1, b), tile(2, b)), tile(3, b));
        Value *even = fadd(fadd(byColumn[0], byColumn[1]), byColumn[2]);
        Value *odd = fsub(fsub(byColumn[1], byColumn[2]), byColumn[3]);
        Value *row =
            B.CreateShuffleVector(even, odd, llvm::createInterleaveMask(unsigned(s.TW), 2));
        if (s.OW < 2 * s.TW)
          row = B.CreateShuffleVector(row, firstColumns);
        Value *oh = B.CreateAdd(B.CreateMul(ty, i64(2)), i64(i));
        auto store = [&] {
          Value *index = B.CreateAdd(B.CreateMul(o, i64(s.OH * s.OW)), B.CreateMul(oh, i64(s.OW)));
          B.CreateAlignedStore(row, elementAt(ft, out, index), align);
        };
        if (i == 1 && s.OH % 2)
          ifThen(B.CreateICmpULT(oh, i64(s.OH)), store);
        else
          store();
      }
    });
  });
}

void GraphLowering::winogradFilterGradImage(const Node *n, Value *img, Value *group,
                                            Value *partial) {
  // The forward's output tile is A^T (U . V) A, so the adjoint of U is
  // (A dy A^T) . V, summed over the tiles: for each of the 16 elements, the
  // product [Out, tiles] x [tiles, In] of dy's transformed tiles and V's.
  WinogradShape s = winogradShape(n);
  const Node *dy = n->Operands[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  int64_t size = ir::byteSize(n->Ty.Elem), T = s.tiles();
  llvm::Align align(size);
  Value *v = columnBuffer(n, group);
  Value *d = B.CreateInBoundsGEP(B.getInt8Ty(), v, i64(alignUp(16 * s.In * T * size)));
  winogradInput(n, img, v);

  // A e A^T for each 2x2 tile e of dy (zero past its edges), A = [1 0;
  // 1 1; 1 -1; 0 -1].
  std::vector<int> padMask;
  for (int64_t j = 0; j < 2 * s.TW; ++j)
    padMask.push_back(int(std::min(j, s.OW)));
  Value *image = B.CreateMul(img, i64(s.Out * s.OH * s.OW));
  parallelFor(i64(s.Out), [&](Value *o) {
    Value *plane = B.CreateAdd(image, B.CreateMul(o, i64(s.OH * s.OW)));
    forRange(i64(s.TH), [&](Value *ty) {
      std::array<std::array<Value *, 4>, 2> f; // A applied along each of 2 rows
      for (int i = 0; i < 2; ++i) {
        Value *r = B.CreateAdd(B.CreateMul(ty, i64(2)), i64(i));
        Value *row = planeRow(dy, plane, r, s.OH, s.OW, padMask);
        Value *e0 = B.CreateShuffleVector(row, llvm::createStrideMask(0, 2, unsigned(s.TW)));
        Value *e1 = B.CreateShuffleVector(row, llvm::createStrideMask(1, 2, unsigned(s.TW)));
        f[i] = {e0, fadd(e0, e1), fsub(e0, e1), B.CreateFNeg(e1)};
      }
      Value *first = B.CreateAdd(B.CreateMul(o, i64(T)), B.CreateMul(ty, i64(s.TW)));
      for (int b = 0; b < 4; ++b) {
        Value *z[4] = {f[0][b], fadd(f[0][b], f[1][b]), fsub(f[0][b], f[1][b]),
                       B.CreateFNeg(f[1][b])};
        for (int a = 0; a < 4; ++a)
          B.CreateAlignedStore(
              z[a], elementAt(ft, d, B.CreateAdd(first, i64((a * 4 + b) * s.Out * T))), align);
      }
    });
  });

  GemmShape shape{false, true, true, s.In, ft, VectorBits};
  forRange(i64(16), [&](Value *e) {
    gemm(shape, elementAt(ft, d, B.CreateMul(e, i64(s.Out * T))),
         elementAt(ft, v, B.CreateMul(e, i64(s.In * T))),
         elementAt(ft, partial, B.CreateMul(e, i64(s.Out * s.In))), i64(s.Out), i64(T));
  });
}

void GraphLowering::winogradFilterGradSum(const Node *n, Value *partials, int64_t partialBytes) {
  // The groups' sums of U's adjoint, added in order, then G^T (.) G gives
  // the filter's: G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 1].
  WinogradShape s = winogradShape(n);
  llvm::Type *ft = elemType(n->Ty.Elem);
  Value *half = llvm::ConstantFP::get(ft, 0.5);
  auto back = [&](Value *v0, Value *v1, Value *v2, Value *v3) {
    Value *even = B.CreateFMul(half, B.CreateFAdd(v1, v2));
    return std::array<Value *, 3>{B.CreateFAdd(v0, even), B.CreateFMul(half, B.CreateFSub(v1, v2)),
                                  B.CreateFAdd(even, v3)};
  };
  parallelFor(i64(s.Out * s.In), [&](Value *pair) {
    Value *p[4][4];
    for (int e = 0; e < 16; ++e) {
      Value *index = B.CreateAdd(pair, i64(e * s.Out * s.In));
      Value *sum = nullptr;
      for (int64_t g = 0; g < ImageGroups; ++g) {
        Value *group = B.CreateInBoundsGEP(B.getInt8Ty(), partials, i64(g * partialBytes));
        Value *term = B.CreateLoad(ft, B.CreateInBoundsGEP(ft, group, index));
        sum = sum ? B.CreateFAdd(sum, term) : term;
      }
      p[e / 4][e % 4] = sum;
    }
    std::array<Value *, 3> rows[4]; // p G, row by row
    for (int a = 0; a < 4; ++a)
      rows[a] = back(p[a][0], p[a][1], p[a][2], p[a][3]);
    for (int l = 0; l < 3; ++l) {
      std::array<Value *, 3> column = back(rows[0][l], rows[1][l], rows[2][l], rows[3][l]);
      for (int k = 0; k < 3; ++k)
        B.CreateStore(column[k],
                      B.CreateInBoundsGEP(ft, slotOf(n).Ptr,
                                          B.CreateAdd(B.CreateMul(pair, i64(9)), i64(k * 3 + l))));
    }
  });
}

void GraphLowering::lowerConv2D(const Node *n) {
  // Per image: im2col, then out[O, OH*OW] = w[O, C*KH*KW] col.
  const Node *x = n->Operands[0], *w = n->Operands[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  const std::vector<int64_t> &in = x->Ty.Dims, &out = n->Ty.Dims;
  int64_t taps = in[1] * n->A.KernelH * n->A.KernelW, positions = out[2] * out[3];
  if (usesWinograd(n, false)) {
    if (!ImageRow) // in an image chain, done before it
      winogradFilter(n);
    return forImages(in[0], [&](Value *img, Value *group) { winogradImage(n, img, group); });
  }
  GemmShape shape{false, false, false, positions, ft, VectorBits};
  forImages(in[0], [&](Value *img, Value *group) {
    Value *col = columnBuffer(n, group);
    fillColumns(n, x, out, img, col);
    Value *dest = B.CreateInBoundsGEP(ft, slotOf(n).Ptr, B.CreateMul(img, i64(out[1] * positions)));
    gemm(shape, slotOf(w).Ptr, col, dest, i64(out[1]), i64(taps));
  });
}

void GraphLowering::lowerConv2DGradInput(const Node *n) {
  // Per image: dcol = w^T dy, then each column entry flows back to the
  // input element it was copied from (col2im).
  const Node *dy = n->Operands[0], *w = n->Operands[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  const std::vector<int64_t> &in = n->Ty.Dims, &out = dy->Ty.Dims;
  int64_t taps = in[1] * n->A.KernelH * n->A.KernelW, positions = out[2] * out[3];
  int64_t imageElements = in[1] * in[2] * in[3];
  if (usesWinograd(n, false)) {
    if (!ImageRow)
      winogradFilter(n);
    return forImages(in[0], [&](Value *img, Value *group) { winogradImage(n, img, group); });
  }
  GemmShape shape{true, false, false, positions, ft, VectorBits};
  forImages(in[0], [&](Value *img, Value *group) {
    Value *col = columnBuffer(n, group);
    Value *adjoint =
        B.CreateInBoundsGEP(ft, slotOf(dy).Ptr, B.CreateMul(img, i64(out[1] * positions)));
    gemm(shape, slotOf(w).Ptr, adjoint, col, i64(taps), i64(out[1]));
    Value *image = B.CreateMul(img, i64(imageElements));
    zeroBytes(B.CreateInBoundsGEP(ft, slotOf(n).Ptr, image),
              imageElements * ir::byteSize(n->Ty.Elem), ir::byteSize(n->Ty.Elem));
    columnsOf(n, in, out, image, [&](Value *c, Value *i) {
      Value *dst = B.CreateInBoundsGEP(ft, slotOf(n).Ptr, i);
      B.CreateStore(
          B.CreateFAdd(B.CreateLoad(ft, dst), B.CreateLoad(ft, B.CreateInBoundsGEP(ft, col, c))),
          dst);
    });
  });
}

void GraphLowering::lowerConv2DGradFilter(const Node *n) {
  // dw[O, C*KH*KW] = sum over images of dy[O, OH*OW] col^T. Each image
  // group sums its images in order into a partial sum of its own, and the
  // groups' sums are added in order after: the same order whatever the
  // thread count.
  const Node *x = n->Operands[0], *dy = n->Operands[1];
  llvm::Type *ft = elemType(n->Ty.Elem);
  const std::vector<int64_t> &in = x->Ty.Dims, &out = dy->Ty.Dims;
  int64_t taps = in[1] * n->A.KernelH * n->A.KernelW, positions = out[2] * out[3];
  int64_t filterElements = n->Ty.staticElements();
  int64_t filterBytes = partialBytes(n);
  bool winograd = usesWinograd(n, false);
  GemmShape shape{false, true, true, taps, ft, VectorBits};
  // Group g's partial sum, after the groups' column matrices.
  auto partial = [&](Value *group) {
    Value *start = B.CreateAdd(i64(Scratch.at(n) + ImageGroups * columnBytes(n)),
                               B.CreateMul(group, i64(filterBytes)));
    return B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, start);
  };
  forImages(
      in[0],
      [&](Value *img, Value *group) {
        if (winograd)
          return winogradFilterGradImage(n, img, group, partial(group));
        Value *col = columnBuffer(n, group);
        fillColumns(n, x, out, img, col);
        Value *adjoint =
            B.CreateInBoundsGEP(ft, slotOf(dy).Ptr, B.CreateMul(img, i64(out[1] * positions)));
        gemm(shape, adjoint, col, partial(group), i64(out[1]), i64(positions));
      },
      [&](Value *group) { zeroBytes(partial(group), filterBytes); });
  Value *first = partial(i64(0));
  if (winograd)
    return winogradFilterGradSum(n, first, filterBytes);
  parallelFor(i64(filterElements), [&](Value *i) {
    Value *sum = B.CreateLoad(ft, B.CreateInBoundsGEP(ft, first, i));
    for (int64_t g = 1; g < ImageGroups; ++g) {
      Value *group = B.CreateInBoundsGEP(B.getInt8Ty(), first, i64(g * filterBytes));
      sum = B.CreateFAdd(sum, B.CreateLoad(ft, B.CreateInBoundsGEP(ft, group, i)));
    }
    B.CreateStore(sum, B.CreateInBoundsGEP(ft, slotOf(n).Ptr, i));
  });
}

std::pair<Value *, Value *> GraphLowering::divRem(Value *v, int64_t d) {
  return {B.CreateUDiv(v, i64(d)), B.CreateURem(v, i64(d))};
}

Value *GraphLowering::channelIndex(Value *imagePosition, Value *channel, int64_t channels,
                                   int64_t positions) {
  auto [img, position] = divRem(imagePosition, positions);
  Value *plane = B.CreateAdd(B.CreateMul(img, i64(channels)), channel);
  return B.CreateAdd(B.CreateMul(plane, i64(positions)), position);
}

std::pair<Value *, Value *> GraphLowering::inputPatch(const Node *n, Value *imagePosition,
                                                      Value *channelTap) {
  const std::vector<int64_t> &in = n->Operands[0]->Ty.Dims,
                             &out = n->Op == OpCode::Conv2D ? n->Ty.Dims : n->Operands[1]->Ty.Dims;
  const ir::Attrs &a = n->A;
  int64_t C = in[1], H = in[2], W = in[3];
  auto [img, p] = divRem(imagePosition, out[2] * out[3]);
  auto [oh, ow] = divRem(p, out[3]);
  auto [c, tap] = divRem(channelTap, a.KernelH * a.KernelW);
  auto [kh, kw] = divRem(tap, a.KernelW);
  auto position = [&](Value *o, Value *k) {
    return B.CreateSub(B.CreateAdd(B.CreateMul(o, i64(a.Stride)), k), i64(a.Pad));
  };
  Value *ih = position(oh, kh), *iw = position(ow, kw);
  Value *plane = B.CreateAdd(B.CreateMul(img, i64(C)), c);
  Value *index = B.CreateAdd(B.CreateMul(B.CreateAdd(B.CreateMul(plane, i64(H)), ih), i64(W)), iw);
  // In the padding: nothing. Negative positions are large unsigned numbers.
  if (a.Pad == 0)
    return {index, nullptr};
  return {index, B.CreateAnd(B.CreateICmpULT(ih, i64(H)), B.CreateICmpULT(iw, i64(W)))};
}

void GraphLowering::gpuProduct(const Node *n, const GpuGemmOperand &a, const GpuGemmOperand &b,
                               const GpuGemmIndex &out, Value *rows, int64_t columns, Value *depth,
                               const GpuGemmSplit *split, const Node *into, const Node *bias,
                               bool relu, const Node *mask) {
  GpuGemmShape shape;
  shape.N = shape.LdC = columns;
  shape.Elem = elemType(n->Ty.Elem);
  shape.Bias = bias != nullptr;
  shape.Relu = relu;
  shape.Mask = mask != nullptr;
  ++Pieces;
  emitGpuGemm(B, *Gpu, shape, a, b, slotOf(into ? into : n).Ptr, out, rows, depth,
              bias ? slotOf(bias).Ptr : nullptr, mask ? slotOf(mask).Ptr : nullptr, split);
  Gpu->barrier(B);
}

void GraphLowering::gpuConv2D(const Node *n, const Node *into, const Node *bias, bool relu) {
  // out[b, o, oh, ow] = sum over c, kh, kw of x[b, c, ih, iw] w[o, c, kh, kw]
  // (ih = oh s + kh - pad, iw = ow s + kw - pad): the product of the image
  // patches [b oh ow, c kh kw] and the filter's transpose [c kh kw, o],
  // each patch read from x as it is staged. Consecutive threads stage
  // consecutive ow: neighbouring pixels.
  const Node *x = n->Operands[0], *w = n->Operands[1];
  int64_t Depth = x->Ty.Dims[1] * n->A.KernelH * n->A.KernelW;
  int64_t O = n->Ty.Dims[1], P = n->Ty.Dims[2] * n->Ty.Dims[3];
  GpuGemmOperand patches;
  patches.Base = slotOf(x).Ptr;
  patches.At = [=](llvm::IRBuilder<> &, Value *m, Value *k) { return inputPatch(n, m, k); };
  // w [O, C KH KW]: op(B)[k, o] = w[o, k].
  GpuGemmOperand filter;
  filter.Base = slotOf(w).Ptr;
  filter.AlongK = true;
  filter.At = [=](llvm::IRBuilder<> &, Value *o, Value *k) {
    return std::pair<Value *, Value *>(B.CreateAdd(B.CreateMul(o, i64(Depth)), k), nullptr);
  };
  GpuGemmIndex out = [=](llvm::IRBuilder<> &, Value *m, Value *o) {
    return channelIndex(m, o, O, P);
  };
  gpuProduct(n, patches, filter, out, B.CreateMul(extent(x->Ty.Dims[0]), i64(P)), O, i64(Depth),
             nullptr, into, bias, relu);
}

void GraphLowering::gpuConv2DGradInput(const Node *n, const Node *into, const Node *mask) {
  // dx[b, c, ih, iw] = sum over o, kh, kw of dy[b, o, oh, ow] w[o, c, kh, kw]
  // over the outputs whose window read (ih, iw): oh s = ih + pad - kh,
  // ow s = iw + pad - kw. The product of dy's patches [b ih iw, o kh kw]
  // (zero where no window starts) and the filter [o kh kw, c]: each input
  // element is written once, by a sum in a fixed order.
  const Node *dy = n->Operands[0], *w = n->Operands[1];
  const ir::Attrs a = n->A;
  int64_t O = dy->Ty.Dims[1], OH = dy->Ty.Dims[2], OW = dy->Ty.Dims[3];
  int64_t C = n->Ty.Dims[1], W = n->Ty.Dims[3], HW = n->Ty.Dims[2] * W;
  int64_t S = a.Stride, KW = a.KernelW, Taps = a.KernelH * KW;
  // Whether t = pos + pad - k is a window's start: t = o s for an output o
  // in [0, extent). A negative t is a large unsigned number.
  auto start = [=](Value *t, int64_t extent) {
    Value *inside = B.CreateICmpULT(t, i64(extent * S));
    return S == 1 ? inside : B.CreateAnd(inside, B.CreateICmpEQ(B.CreateURem(t, i64(S)), i64(0)));
  };
  GpuGemmOperand patches;
  patches.Base = slotOf(dy).Ptr;
  patches.At = [=](llvm::IRBuilder<> &, Value *m, Value *k) {
    auto [img, q] = divRem(m, HW);
    auto [ih, iw] = divRem(q, W);
    auto [o, tap] = divRem(k, Taps);
    auto [kh, kw] = divRem(tap, KW);
    Value *th = B.CreateSub(B.CreateAdd(ih, i64(a.Pad)), kh);
    Value *tw = B.CreateSub(B.CreateAdd(iw, i64(a.Pad)), kw);
    Value *plane = B.CreateAdd(B.CreateMul(img, i64(O)), o);
    Value *row = B.CreateAdd(B.CreateMul(plane, i64(OH)), B.CreateUDiv(th, i64(S)));
    Value *index = B.CreateAdd(B.CreateMul(row, i64(OW)), B.CreateUDiv(tw, i64(S)));
    return std::pair<Value *, Value *>(index, B.CreateAnd(start(th, OH), start(tw, OW)));
  };
  // w [O, C, KH, KW]: op(B)[(o, kh, kw), c] = w[o, c, kh, kw].
  GpuGemmOperand filter;
  filter.Base = slotOf(w).Ptr;
  filter.AlongK = true;
  filter.At = [=](llvm::IRBuilder<> &, Value *c, Value *k) {
    auto [o, tap] = divRem(k, Taps);
    Value *pair = B.CreateAdd(B.CreateMul(o, i64(C)), c);
    return std::pair<Value *, Value *>(B.CreateAdd(B.CreateMul(pair, i64(Taps)), tap), nullptr);
  };
  GpuGemmIndex out = [=](llvm::IRBuilder<> &, Value *m, Value *c) {
    return channelIndex(m, c, C, HW);
  };
  gpuProduct(n, patches, filter, out, B.CreateMul(extent(dy->Ty.Dims[0]), i64(HW)), C,
             i64(O * Taps), nullptr, into, nullptr, false, mask);
}

void GraphLowering::gpuConv2DGradFilter(const Node *n) {
  // dw[o, c, kh, kw] = sum over b, oh, ow of dy[b, o, oh, ow] x[b, c, ih, iw]
  // (ih = oh s + kh - pad, iw = ow s + kw - pad): the product of dy
  // [o, b oh ow] and x's patches [b oh ow, c kh kw]. Its depth, the batch's
  // output positions, is long and its tiles few: it is cut into runs
  // (productSplit), which a second kernel adds in order.
  const Node *x = n->Operands[0], *dy = n->Operands[1];
  int64_t O = dy->Ty.Dims[1], P = dy->Ty.Dims[2] * dy->Ty.Dims[3];
  int64_t Columns = x->Ty.Dims[1] * n->A.KernelH * n->A.KernelW;
  // dy [b, o, p]: op(A)[o, (b, p)].
  GpuGemmOperand adjoint;
  adjoint.Base = slotOf(dy).Ptr;
  adjoint.AlongK = true;
  adjoint.At = [=](llvm::IRBuilder<> &, Value *o, Value *k) {
    return std::pair<Value *, Value *>(channelIndex(k, o, O, P), nullptr);
  };
  GpuGemmOperand patches;
  patches.Base = slotOf(x).Ptr;
  patches.AlongK = true;
  patches.At = [=](llvm::IRBuilder<> &, Value *column, Value *k) {
    return inputPatch(n, k, column);
  };
  GpuGemmIndex out = [=](llvm::IRBuilder<> &, Value *o, Value *column) {
    return B.CreateAdd(B.CreateMul(o, i64(Columns)), column);
  };
  Value *depth = B.CreateMul(extent(x->Ty.Dims[0]), i64(P));
  if (productRuns(n) == 1)
    return gpuProduct(n, adjoint, patches, out, i64(O), Columns, depth);
  auto [runs, runDepth] = productSplit(B, n, Batch);
  GpuGemmSplit split{runs, runDepth,
                     B.CreateInBoundsGEP(B.getInt8Ty(), Workspace, i64(Scratch.at(n)))};
  gpuProduct(n, adjoint, patches, out, i64(O), Columns, depth, &split);
  addProductRuns(n, n, Columns, [this, elements = O * Columns] { return i64(elements); });
}

void GraphLowering::lowerMaxPool2D(const Node *n, bool grad) {
  // Forward: the maximum of each window (padding counts as -inf, as in
  // PyTorch). Gradient: the output's adjoint goes to the window's first
  // maximum, found again from the input. The window's taps are
  // straight-line code, so that the loop along a row of outputs
  // vectorizes.
  const Node *x = n->Operands[0];
  const ir::Attrs &a = n->A;
  int64_t C = x->Ty.Dims[1], H = x->Ty.Dims[2], W = x->Ty.Dims[3];
  const std::vector<int64_t> &outDims = grad ? n->Operands[1]->Ty.Dims : n->Ty.Dims;
  int64_t OH = outDims[2], OW = outDims[3];
  llvm::Type *ft = elemType(n->Ty.Elem);
  Value *minusInf = llvm::ConstantFP::getInfinity(ft, true);
  // Windows that neither overlap nor reach into the padding: each input
  // element is in one window at most, and the gradient stores each
  // window's elements (the adjoint or zero) rather than adding into them.
  bool disjoint = a.Pad == 0 && a.Stride >= a.KernelH && a.Stride >= a.KernelW;
  bool covered = disjoint && OH * a.Stride == H && OW * a.Stride == W && a.Stride == a.KernelH &&
                 a.Stride == a.KernelW;
  auto window = [&](Value *plane) {
    Value *dst = slotOf(n).Ptr;
    Value *inBase = B.CreateMul(plane, i64(H * W));
    forRange(i64(OH), [&](Value *oh) {
      forRange(
          i64(0), i64(OW),
          [&](Value *ow) {
            // The best tap's number as well as its index: comparing 32-bit
            // numbers keeps whole vectors where 64-bit indices split them.
            Value *best = minusInf, *bestIndex = inBase, *bestTap = B.getInt32(0);
            std::vector<Value *> taps;
            for (int64_t kh = 0; kh < a.KernelH; ++kh)
              for (int64_t kw = 0; kw < a.KernelW; ++kw) {
                Value *ih = B.CreateAdd(B.CreateMul(oh, i64(a.Stride)), i64(kh - a.Pad));
                Value *iw = B.CreateAdd(B.CreateMul(ow, i64(a.Stride)), i64(kw - a.Pad));
                Value *index = B.CreateAdd(inBase, B.CreateAdd(B.CreateMul(ih, i64(W)), iw));
                taps.push_back(index);
                Value *v;
                if (a.Pad == 0) {
                  v = load(x, index);
                } else {
                  Value *inside = B.CreateAnd(
                      B.CreateAnd(B.CreateICmpSGE(ih, i64(0)), B.CreateICmpSLT(ih, i64(H))),
                      B.CreateAnd(B.CreateICmpSGE(iw, i64(0)), B.CreateICmpSLT(iw, i64(W))));
                  // Outside the image, read the window's corner instead
                  // (always valid memory) and let -inf stand for the padding.
                  index = B.CreateSelect(inside, index, inBase);
                  v = B.CreateSelect(inside, load(x, index), minusInf);
                }
                Value *better = B.CreateFCmpOGT(v, best);
                best = B.CreateSelect(better, v, best);
                bestIndex = B.CreateSelect(better, index, bestIndex);
                bestTap = B.CreateSelect(better, B.getInt32(uint32_t(taps.size() - 1)), bestTap);
              }
            Value *outIndex =
                B.CreateAdd(B.CreateMul(B.CreateAdd(B.CreateMul(plane, i64(OH)), oh), i64(OW)), ow);
            if (!grad) {
              B.CreateStore(best, B.CreateInBoundsGEP(ft, dst, outIndex));
              return;
            }
            Value *adjoint = load(n->Operands[1], outIndex);
            if (disjoint) {
              Value *zero = llvm::ConstantFP::get(ft, 0);
              for (size_t k = 0; k < taps.size(); ++k)
                B.CreateStore(
                    B.CreateSelect(B.CreateICmpEQ(bestTap, B.getInt32(uint32_t(k))), adjoint, zero),
                    B.CreateInBoundsGEP(ft, dst, taps[k]));
              return;
            }
            Value *target = B.CreateInBoundsGEP(ft, dst, bestIndex);
            B.CreateStore(B.CreateFAdd(B.CreateLoad(ft, target), adjoint), target);
          },
          /*rolled=*/true);
    });
  };
  // Windows that tile a narrow plane exactly (a 2x2 pool of stride 2 on
  // 24x24): a row of windows is computed from whole input rows as vectors,
  // each tap a shuffle of one row, where the loop above gathers each tap
  // and scatters each gradient element.
  unsigned S = unsigned(a.Stride), lanes = unsigned(OW);
  auto windowRows = [&](Value *plane) {
    Value *inBase = B.CreateMul(plane, i64(H * W));
    Value *outBase = B.CreateMul(plane, i64(OH * OW));
    auto *tapType = llvm::FixedVectorType::get(B.getInt32Ty(), lanes);
    forRange(i64(OH), [&](Value *oh) {
      auto rowIndex = [&](int64_t kh) {
        return B.CreateAdd(inBase,
                           B.CreateMul(B.CreateAdd(B.CreateMul(oh, i64(S)), i64(kh)), i64(W)));
      };
      Value *best = B.CreateVectorSplat(lanes, minusInf);
      Value *bestTap = llvm::Constant::getNullValue(tapType);
      for (unsigned kh = 0; kh < S; ++kh) {
        Value *row = loadVector(x, rowIndex(kh), unsigned(W));
        for (unsigned kw = 0; kw < S; ++kw) {
          Value *v = B.CreateShuffleVector(row, llvm::createStrideMask(kw, S, lanes));
          Value *better = B.CreateFCmpOGT(v, best);
          best = B.CreateSelect(better, v, best);
          bestTap = B.CreateSelect(better, llvm::ConstantInt::get(tapType, kh * S + kw), bestTap);
        }
      }
      Value *outIndex = B.CreateAdd(outBase, B.CreateMul(oh, i64(OW)));
      llvm::Align align(ir::byteSize(n->Ty.Elem));
      if (!grad) {
        B.CreateAlignedStore(best, B.CreateInBoundsGEP(ft, slotOf(n).Ptr, outIndex), align);
        return;
      }
      Value *adjoint = loadVector(n->Operands[1], outIndex, lanes);
      Value *zero = llvm::Constant::getNullValue(adjoint->getType());
      for (unsigned kh = 0; kh < S; ++kh) {
        std::vector<Value *> parts;
        for (unsigned kw = 0; kw < S; ++kw)
          parts.push_back(
              B.CreateSelect(B.CreateICmpEQ(bestTap, llvm::ConstantInt::get(tapType, kh * S + kw)),
                             adjoint, zero));
        Value *row = B.CreateShuffleVector(llvm::concatenateVectors(B, parts),
                                           llvm::createInterleaveMask(lanes, S));
        B.CreateAlignedStore(row, B.CreateInBoundsGEP(ft, slotOf(n).Ptr, rowIndex(kh)), align);
      }
    });
  };
  bool rowVectors = !Gpu && covered && W <= 64;
  auto planes = [&](Value *img) {
    if (grad && !covered) // elements that no window stores to
      zeroBytes(B.CreateInBoundsGEP(ft, slotOf(n).Ptr, B.CreateMul(img, i64(C * H * W))),
                C * H * W * ir::byteSize(n->Ty.Elem), ir::byteSize(n->Ty.Elem));
    forRange(i64(C), [&](Value *c) {
      Value *plane = B.CreateAdd(B.CreateMul(img, i64(C)), c);
      rowVectors ? windowRows(plane) : window(plane);
    });
  };
  if (!Gpu)
    return forImages(x->Ty.Dims[0], [&](Value *img, Value *) { planes(img); });
  if (grad && !covered) {
    zeroFill(n);
    nextKernel();
  }
  parallelFor(B.CreateMul(extent(x->Ty.Dims[0]), i64(C)), window);
}

} // namespace nnc::lowering
