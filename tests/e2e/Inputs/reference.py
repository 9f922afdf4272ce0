"""Reference training of softmax regression, in plain Python doubles.

Replays full-batch training of `logits = dense(x, C)` under cross_entropy
with PyTorch's SGD (momentum, dampening 0, nesterov, weight decay) or Adam
(with weight decay) update rules, starting from the weights an nnc trainer
saved with --epochs 0, and compares with the weights nnc reached.

usage: reference.py CSV LABEL START.w END.w EPOCHS sgd LR MOMENTUM WD NESTEROV
       reference.py CSV LABEL START.w END.w EPOCHS adam LR BETA1 BETA2 EPS WD
       reference.py CSV LABEL START.w END.w EPOCHS rmsprop LR ALPHA EPS MOMENTUM CENTERED WD
       reference.py CSV LABEL START.w END.w EPOCHS adadelta LR RHO EPS WD
"""
import csv
import math
import struct
import sys


def read_weights(path):
    """The weights of an nnc weights file, and their element size (4 or 8)."""
    data = open(path, "rb").read()
    magic, version, size, count, _hash = struct.unpack_from("<4sIIQQ", data)
    assert magic == b"NNCW" and version == 2 and size in (4, 8), (magic, version, size)
    return list(struct.unpack_from("<%d%s" % (count, "d" if size == 8 else "f"), data, 28)), size


def main(argv):
    path, label, start, end, epochs, kind = argv[:6]
    hyper = [float(v) for v in argv[6:]]
    rows = list(csv.reader(open(path)))
    header, rows = rows[0], rows[1:]
    li = header.index(label)
    names = sorted({r[li] for r in rows})
    xs = [[float(v) for i, v in enumerate(r) if i != li] for r in rows]
    ys = [names.index(r[li]) for r in rows]
    n, f, c = len(xs), len(xs[0]), len(names)

    p, size = read_weights(start)  # weight [c, f] then bias [c]
    state1 = [0.0] * len(p)
    state2 = [0.0] * len(p)
    state3 = [0.0] * len(p)
    for step in range(1, int(epochs) + 1):
        g = [0.0] * len(p)
        for x, y in zip(xs, ys):
            logits = [sum(p[k * f + j] * x[j] for j in range(f)) + p[c * f + k]
                      for k in range(c)]
            top = max(logits)
            exps = [math.exp(v - top) for v in logits]
            total = sum(exps)
            for k in range(c):
                d = (exps[k] / total - (1.0 if k == y else 0.0)) / n
                for j in range(f):
                    g[k * f + j] += d * x[j]
                g[c * f + k] += d
        if kind == "sgd":
            lr, momentum, wd, nesterov = hyper
            for i in range(len(p)):
                gi = g[i] + wd * p[i]
                if momentum:
                    state1[i] = momentum * state1[i] + gi
                    gi = gi + momentum * state1[i] if nesterov else state1[i]
                p[i] -= lr * gi
        elif kind == "rmsprop":
            lr, alpha, eps, momentum, centered, wd = hyper
            for i in range(len(p)):
                gi = g[i] + wd * p[i]
                state1[i] = alpha * state1[i] + (1 - alpha) * gi * gi
                variance = state1[i]
                if centered:
                    state2[i] = alpha * state2[i] + (1 - alpha) * gi
                    variance -= state2[i] * state2[i]
                scaled = gi / (math.sqrt(variance) + eps)
                if momentum:
                    state3[i] = momentum * state3[i] + scaled
                    scaled = state3[i]
                p[i] -= lr * scaled
        elif kind == "adadelta":
            lr, rho, eps, wd = hyper
            for i in range(len(p)):
                gi = g[i] + wd * p[i]
                state1[i] = rho * state1[i] + (1 - rho) * gi * gi
                delta = math.sqrt(state2[i] + eps) / math.sqrt(state1[i] + eps) * gi
                state2[i] = rho * state2[i] + (1 - rho) * delta * delta
                p[i] -= lr * delta
        else:
            lr, b1, b2, eps, wd = hyper
            c1 = 1 - b1 ** step
            c2 = math.sqrt(1 - b2 ** step)
            for i in range(len(p)):
                gi = g[i] + wd * p[i]
                state1[i] = b1 * state1[i] + (1 - b1) * gi
                state2[i] = b2 * state2[i] + (1 - b2) * gi * gi
                denom = math.sqrt(state2[i]) / c2 + eps
                p[i] -= lr / c1 * state1[i] / denom

    got, _ = read_weights(end)
    worst = max(abs(a - b) for a, b in zip(p, got))
    # f64 trainers follow the replay to rounding; f32 ones to single
    # precision's (the replay stays in doubles).
    bound = 1e-12 if size == 8 else 1e-5
    print("reference: %d parameters, largest difference %.3e" % (len(p), worst))
    print("reference: " + ("MATCH" if worst < bound else "MISMATCH"))
    return 0 if worst < bound else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
