#!/usr/bin/python3
"""PyTorch twins of the models that bench/run.py times, trained as nnc's trainers train them.

Each twin has its spec's layers and sizes, loss, optimizer and hyper-parameters, in float32,
with PyTorch's default initialisation (which does not change the speed). The data are random
tensors of the spec's shapes and types, labels in range: a training step costs the same
whatever the values. Only the number of training rows matters, and run.py passes the one the
nnc trainer reports. Only the training loop is timed, as nnc's `--speed` does: per epoch a
fresh permutation when there is more than one batch (nnc reshuffles then), the batches gathered
from tensors loaded beforehand, forward, loss, backward and the optimizer step. No evaluation.

With --device cuda (bench/gpu.py), the model, the data and the permutations are on the GPU
before the clock starts, one untimed training step first does PyTorch's one-time CUDA set-up
(cuBLAS and cuDNN handles, loading the kernels, the allocator's first blocks), and the clock
starts and stops after torch.cuda.synchronize(). --seconds S instead of --epochs trains for
about S seconds: untimed runs of the same loop, of more and more epochs, measure how many.

usage: torch_models.py MODEL --rows R (--epochs E | --seconds S) --batch N|all --threads T
                       [--device cpu|cuda]
prints the line nnc's trainers print with --speed:
  speed: <rows/s> rows/s, <s> s in training steps (E epochs x R rows, T threads)
(on a GPU, its name instead of "T threads")
"""

import argparse
import functools
import math
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn


Data = Callable[[int], tuple[list[Tensor], Tensor]]  # rows -> (inputs, label)


@dataclass
class Twin:
    module: Callable[[], nn.Module]  # forward(*inputs) gives the prediction
    loss: Callable[[Tensor, Tensor], Tensor]
    optimizer: Callable[..., torch.optim.Optimizer]  # called with the parameters
    data: Data


# --- Data: random tensors of the specs' shapes ------------------------------------------------

def floats(*shape: int) -> Tensor:
    return torch.rand(shape)


def integers(count: int, *shape: int, low: int = 0) -> Tensor:
    """Classes or indices, uniform in [low, count)."""
    return torch.randint(low, count, shape)


def sentences(rows: int, length: int, vocab: int) -> Tensor:
    """Word indices as a text source gives them: 0 is padding, 1 the unknown word; the words
    of a sentence first, then padding up to `length`. Lengths are uniform in [1, length]."""
    lengths = integers(length + 1, rows, 1, low=1)
    return integers(vocab, rows, length, low=2).masked_fill(torch.arange(length) >= lengths, 0)


def regression_data(features: int, targets: int) -> Data:
    return lambda rows: ([floats(rows, features)], floats(rows, targets))


def reconstruction_data(features: int) -> Data:
    """An autoencoder's rows: the label is the input itself."""
    def data(rows: int) -> tuple[list[Tensor], Tensor]:
        x = floats(rows, features)
        return [x], x
    return data


def class_data(*shape: int, count: int) -> Data:
    return lambda rows: ([floats(rows, *shape)], integers(count, rows))


def ratings_data(users: int, items: int) -> Data:
    return lambda rows: ([integers(users, rows), integers(items, rows)], floats(rows, 1))


def text_data(length: int, vocab: int, classes: int) -> Data:
    return lambda rows: ([sentences(rows, length, vocab)], integers(classes, rows))


def tagged_data(length: int, vocab: int, tags: int) -> Data:
    """Sentences of exactly `length` words, as bench/make_tagged.py writes them: no padding."""
    return lambda rows: ([integers(vocab, rows, length, low=2)], integers(tags, rows, length))


# --- The networks -----------------------------------------------------------------------------

def mlp(*sizes: int) -> nn.Sequential:
    """Dense layers of these sizes with a ReLU between each two, as `dense |> relu |> dense`."""
    layers: list[nn.Module] = []
    for fan_in, units in zip(sizes, sizes[1:]):
        layers += [nn.Linear(fan_in, units), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class Recommender(nn.Module):
    """recommender_100k.nn: concat(user embedding, item embedding) -> dense(50) relu dense(1)."""

    def __init__(self, users: int, items: int):
        super().__init__()
        self.user_vec = nn.Embedding(users, 10)
        self.item_vec = nn.Embedding(items, 10)
        self.predicted = mlp(20, 50, 1)

    def forward(self, user: Tensor, item: Tensor) -> Tensor:
        return self.predicted(torch.cat([self.user_vec(user), self.item_vec(item)], dim=1))


class MeanPoolClassifier(nn.Module):
    """text_classifier.nn: the mean of the word embeddings over the real (non-0) words."""

    def __init__(self, vocab: int, classes: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, 64)
        self.logits = nn.Linear(64, classes)

    def forward(self, words: Tensor) -> Tensor:
        real = (words != 0).unsqueeze(-1).float()
        pooled = (self.embedding(words) * real).sum(1) / real.sum(1).clamp(min=1)
        return self.logits(pooled)


class LastStateClassifier(nn.Module):
    """text_classifier_lstm.nn: the LSTM's output at the last real word. Like nnc's, the LSTM
    runs over the padding too (it comes after the words, so it changes nothing before)."""

    def __init__(self, vocab: int, classes: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, 64)
        self.lstm = nn.LSTM(64, 64, batch_first=True)
        self.logits = nn.Linear(64, classes)

    def forward(self, words: Tensor) -> Tensor:
        states, _ = self.lstm(self.embedding(words))
        last = (words != 0).sum(1).clamp(min=1) - 1
        return self.logits(states[torch.arange(len(words)), last])


class Tagger(nn.Module):
    """tagger_bench.nn: embedding(64) -> lstm(hidden) -> dense(tags) at every step."""

    def __init__(self, vocab: int, hidden: int, tags: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, 64)
        self.lstm = nn.LSTM(64, hidden, batch_first=True)
        self.scores = nn.Linear(hidden, tags)

    def forward(self, words: Tensor) -> Tensor:
        states, _ = self.lstm(self.embedding(words))
        return self.scores(states)


def tag_cross_entropy(scores: Tensor, tags: Tensor) -> Tensor:
    """Cross-entropy over all real positions: nnc's loss against a class[T, C] label."""
    return nn.functional.cross_entropy(scores.flatten(0, 1), tags.flatten(), ignore_index=-1)


def mnist_cnn() -> nn.Sequential:
    """mnist_cnn.nn. Its loss is cross_entropy(softmax(logits)), which nnc computes from the
    logits; the twin ends at the logits and uses CrossEntropyLoss, the same math."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
        nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
        nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))


def autoencoder() -> nn.Sequential:
    return nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 10), nn.Sigmoid())


# --- The twins, by bench name -----------------------------------------------------------------

adam = functools.partial(torch.optim.Adam, lr=0.001)


def sgd(lr: float) -> Callable[..., torch.optim.Optimizer]:
    return functools.partial(torch.optim.SGD, lr=lr)


TWINS: dict[str, Twin] = {
    "simple": Twin(lambda: mlp(2, 2, 1), nn.MSELoss(), sgd(0.01), regression_data(2, 1)),
    "iris": Twin(lambda: mlp(4, 64, 32, 3), nn.CrossEntropyLoss(), adam,
                 class_data(4, count=3)),
    "regression": Twin(lambda: mlp(1, 64, 32, 1), nn.MSELoss(), adam, regression_data(1, 1)),
    "linreg": Twin(lambda: nn.Linear(1, 1), nn.MSELoss(), sgd(1e-4), regression_data(1, 1)),
    "autoencoder": Twin(autoencoder, nn.MSELoss(), adam, reconstruction_data(10)),
    "recommender": Twin(lambda: Recommender(500, 200), nn.MSELoss(), adam,
                        ratings_data(500, 200)),
    "mnist_mlp": Twin(lambda: mlp(784, 128, 256, 10), nn.CrossEntropyLoss(), sgd(0.001),
                      class_data(784, count=10)),
    "mnist_cnn": Twin(mnist_cnn, nn.CrossEntropyLoss(),
                      functools.partial(torch.optim.Adadelta, lr=1.0, rho=0.95, eps=1e-6),
                      class_data(1, 28, 28, count=10)),
    "tagger": Twin(lambda: Tagger(5002, 128, 12), tag_cross_entropy, adam,
                   tagged_data(32, 5002, 12)),
    "text_classifier": Twin(lambda: MeanPoolClassifier(12000, 2), nn.CrossEntropyLoss(), adam,
                            text_data(64, 12000, 2)),
    "text_classifier_lstm": Twin(lambda: LastStateClassifier(12000, 2), nn.CrossEntropyLoss(),
                                 adam, text_data(64, 12000, 2)),
    # bench/specs/mlp64.nn, bench/gpu.py's sweep of batch sizes.
    "mlp64": Twin(lambda: mlp(32, 64, 64, 64, 10), nn.CrossEntropyLoss(), adam,
                  class_data(32, count=10)),
}


# --- Training ---------------------------------------------------------------------------------

def epoch_batches(rows: int, batch: int, device: torch.device) -> list:
    """The row selections of one epoch, as nnc's runtime makes them: consecutive batches of a
    fresh permutation when there is more than one batch, else every row in order."""
    if batch >= rows:
        return [slice(0, rows)]
    order = torch.randperm(rows, device=device)
    return [order[start:start + batch] for start in range(0, rows, batch)]


class Trainer:
    """A twin's model, optimizer and data, on one device, ready to train."""

    def __init__(self, twin: Twin, rows: int, batch: int, device: torch.device):
        # Drawn on the CPU whatever the device, so that both devices train on the same values.
        inputs, label = twin.data(rows)
        self.inputs = [x.to(device) for x in inputs]
        self.label = label.to(device)
        self.model = twin.module().to(device)
        self.model.train()
        self.optimizer = twin.optimizer(self.model.parameters())
        self.loss = twin.loss
        self.rows, self.batch, self.device = rows, batch, device

    def step(self, rows_of_batch) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        prediction = self.model(*(x[rows_of_batch] for x in self.inputs))
        self.loss(prediction, self.label[rows_of_batch]).backward()
        self.optimizer.step()

    def sync(self) -> None:
        """Waits for the GPU's queued work: the clock reads only after it."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train(self, epochs: int) -> float:
        """Trains for `epochs` epochs and returns the seconds spent in the training loop."""
        self.sync()
        start = time.perf_counter()
        for _ in range(epochs):
            for rows_of_batch in epoch_batches(self.rows, self.batch, self.device):
                self.step(rows_of_batch)
        self.sync()
        return time.perf_counter() - start

    def warm_up(self) -> None:
        """One untimed step: on a GPU the first one sets up what later ones reuse."""
        self.step(epoch_batches(self.rows, self.batch, self.device)[0])
        self.sync()

    def epochs_for(self, seconds: float) -> int:
        """How many epochs train for about `seconds`, from untimed runs of the same loop, each
        longer than the one before, until one takes a fifth of that."""
        epochs = 1
        while True:
            took = self.train(epochs)
            if took >= seconds / 5:
                return max(1, round(epochs * seconds / took))
            epochs = min(epochs * 100, max(epochs * 2,
                                           math.ceil(epochs * seconds / 5 / max(took, 1e-6))))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(TWINS))
    parser.add_argument("--rows", type=int, required=True, help="training rows")
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--epochs", type=int)
    length.add_argument("--seconds", type=float,
                        help="train for about this long: the epochs measured beforehand")
    parser.add_argument("--batch", required=True, help="rows per step, or 'all'")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"torch_models.py: --device cuda: PyTorch {torch.__version__} sees no CUDA "
                 f"device (torch.cuda.is_available() is False; built with CUDA "
                 f"{torch.version.cuda})")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch = args.rows if args.batch == "all" else int(args.batch)
    trainer = Trainer(TWINS[args.model], args.rows, batch, device)
    if device.type == "cuda":
        trainer.warm_up()
    epochs = args.epochs if args.seconds is None else trainer.epochs_for(args.seconds)
    seconds = trainer.train(epochs)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{args.threads} threads")
    print(f"speed: {epochs * args.rows / seconds:.0f} rows/s, {seconds:.3f} s in training "
          f"steps ({epochs} epochs x {args.rows} rows, {where})")


if __name__ == "__main__":
    main()
