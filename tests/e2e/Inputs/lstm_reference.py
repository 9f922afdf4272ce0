"""The loss of tests/e2e/lstm-reference.nn at given weights, in plain Python.

The LSTM follows PyTorch's nn.LSTM documentation, independently of nnc:
  i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)   (rows 0..H-1 of weight_ih, ...)
  f = sigmoid(...rows H..2H-1), g = tanh(...rows 2H..3H-1),
  o = sigmoid(...rows 3H..4H-1), c' = f c + i g, h' = o tanh(c'),
from h = c = 0. The model reads the last step's h and the mean of h over the
steps, then a dense layer to one value; the loss is the mean squared error.

usage: lstm_reference.py CSV WEIGHTS HIDDEN  -> prints "reference loss X"
"""
import csv
import math
import struct
import sys


def read_weights(path):
    data = open(path, "rb").read()
    magic, version, size, count, _hash = struct.unpack_from("<4sIIQQ", data)
    assert magic == b"NNCW" and version == 2 and size == 8, (magic, version, size)
    return list(struct.unpack_from("<%dd" % count, data, 28))


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def main(path, weights, hidden):
    rows = list(csv.reader(open(path)))[1:]
    p = read_weights(weights)
    H = int(hidden)
    F = 2
    # Parameters in the order the spec declares them (docs/language.md).
    at = 0
    def take(n):
        nonlocal at
        at += n
        return p[at - n:at]
    w_ih, w_hh = take(4 * H * F), take(4 * H * H)
    b_ih, b_hh = take(4 * H), take(4 * H)
    w_out, b_out = take(2 * H), take(1)
    assert at == len(p), (at, len(p))
    total = 0.0
    for r in rows:
        values = [float(v) for v in r]
        xs, y = [values[0:2], values[2:4], values[4:6]], values[6]
        h, c = [0.0] * H, [0.0] * H
        hs = []
        for x in xs:
            z = [sum(w_ih[j * F + k] * x[k] for k in range(F)) + b_ih[j] +
                 sum(w_hh[j * H + k] * h[k] for k in range(H)) + b_hh[j]
                 for j in range(4 * H)]
            i = [sigmoid(v) for v in z[0:H]]
            f = [sigmoid(v) for v in z[H:2 * H]]
            g = [math.tanh(v) for v in z[2 * H:3 * H]]
            o = [sigmoid(v) for v in z[3 * H:4 * H]]
            c = [f[k] * c[k] + i[k] * g[k] for k in range(H)]
            h = [o[k] * math.tanh(c[k]) for k in range(H)]
            hs.append(h)
        mean = [sum(step[k] for step in hs) / len(hs) for k in range(H)]
        features = hs[-1] + mean
        out = sum(w_out[k] * features[k] for k in range(2 * H)) + b_out[0]
        total += (out - y) ** 2
    print("reference loss %.6f" % (total / len(rows)))


if __name__ == "__main__":
    main(*sys.argv[1:])
