"""Example models and the digits data set: what the demo, the docs and the tests prune.

* :class:`DemoNet`: the seed README's small CNN for 3x8x8 inputs.
* :class:`DigitsMLP` (factory :func:`digits_mlp`): a 64-128-64-10 MLP for the
  8x8 digits images that scikit-learn ships (:func:`sklearn.datasets.load_digits`,
  1797 images, no download). ``prunefw prune --model prunefw.examples:digits_mlp``
  builds it with seeded weights.
* :class:`DigitsCNN` (factory :func:`digits_cnn`): a small CNN for the same digits
  (two 3x3 convolutions, a 2x2 max-pool, one Linear), taking the same flattened
  ``(N, 64)`` input; ``prunefw.examples:digits_cnn`` on the command line.
* :func:`load_digits_data`, :func:`train`, :func:`accuracy`: a seeded train/test
  split, a few epochs of Adam, and the test accuracy, in seconds on 2 cores.

scikit-learn is only needed by :func:`load_digits_data` (``pip install
'prunefw[demo]'``).

Example:
    >>> import torch
    >>> model = digits_mlp()
    >>> [name for name, _ in model.named_children()]
    ['features', 'classifier']
    >>> model(torch.zeros(2, 64)).shape
    torch.Size([2, 10])
    >>> torch.equal(digits_mlp().classifier.weight, model.classifier.weight)  # seeded
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from prunefw.errors import PrunefwError

__all__ = [
    "DIGITS_CLASSES",
    "DIGITS_FEATURES",
    "DIGITS_GRADUAL_RECIPE",
    "DIGITS_RECIPE",
    "DemoNet",
    "DigitsCNN",
    "DigitsData",
    "DigitsMLP",
    "accuracy",
    "demo_net",
    "digits_cnn",
    "digits_mlp",
    "load_digits_data",
    "train",
]

_T = TypeVar("_T")

#: Pixels of a digits image (8x8, values 0..16 scaled to [0, 1]).
DIGITS_FEATURES = 64
#: Digit classes.
DIGITS_CLASSES = 10

#: The recipe ``prunefw demo`` applies to the trained :class:`DigitsMLP`; the same
#: text as ``docs/recipes/digits-mlp.toml`` (a test keeps them equal).
DIGITS_RECIPE = """\
# model: prunefw.examples:digits_mlp
description = "digits MLP: hidden layers ranked together, the small classifier on its own"

# The two hidden layers of `features` (64-128 and 128-64) share one magnitude
# ranking: 90% of their weights go, wherever they are smallest.
[global]
criteria = [{ name = "magnitude", amount = 0.9 }]
module_types = ["Linear"]
include = ["features.*"]

# The classifier (64-10) has few weights and each one matters more: half of them,
# the smallest, go.
[[layer]]
match = "classifier"
criteria = [{ name = "magnitude", amount = 0.5 }]
"""


#: The gradual recipe ``prunefw demo`` runs while fine-tuning a copy of the trained
#: :class:`DigitsMLP`; the same text as ``docs/recipes/gradual-mlp.toml`` (a test keeps
#: them equal). Its steps assume batches of 64 (23 optimizer steps per epoch).
DIGITS_GRADUAL_RECIPE = """\
# model: prunefw.examples:digits_mlp
description = "digits MLP: the hidden layers pruned to 90% gradually while fine-tuning"

# The two hidden layers of `features` share one magnitude ranking. The schedule sets
# the criterion's `amount` at every pruning event, so the criterion has none here.
[global]
criteria = ["magnitude"]
module_types = ["Linear"]
include = ["features.*"]

# Steps are optimizer steps: the digits' 1438 training images in batches of 64 make
# 23 steps per epoch. From 0% to 90% along the cubic curve over the first 12 epochs
# (276 steps), pruning every half epoch (12 steps); the rest of the fine-tuning
# recovers at 90%.
[schedule]
initial_sparsity = 0.0
final_sparsity = 0.9
start_step = 0
end_step = 276
frequency = 12
curve = "cubic"
"""


class DemoNet(nn.Module):
    """The seed README's small CNN for 3x8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify a batch of 3x8x8 images into 10 classes."""
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc1(x.flatten(1))


class DigitsMLP(nn.Module):
    """An MLP for the 8x8 digits: ``features`` (64-128-64, ReLU) and a ``classifier`` (64-10).

    Qualified names of the Linear layers: ``features.0``, ``features.2``, ``classifier``.

    Args:
        hidden: Widths of the two hidden layers.
    """

    def __init__(self, hidden: tuple[int, int] = (128, 64)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Linear(DIGITS_FEATURES, hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(hidden[1], DIGITS_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for a batch of flattened images, shape ``(N, 64)``."""
        return self.classifier(self.features(x.flatten(1)))


class DigitsCNN(nn.Module):
    """A small CNN for the 8x8 digits: ``features`` (two convolutions, a pool) and a ``classifier``.

    It takes the same flattened ``(N, 64)`` images as :class:`DigitsMLP` (any input with
    64 values per image) and reshapes them to ``(N, 1, 8, 8)``, so :func:`train` and
    :func:`accuracy` work unchanged. ``features`` is ``Conv2d(1, c1, 3, padding=1)``,
    ReLU, ``Conv2d(c1, c2, 3, padding=1)``, ReLU, ``MaxPool2d(2)``; ``classifier`` is
    ``Linear(c2 * 4 * 4, 10)``. Qualified names of the pruned layers: ``features.0``,
    ``features.2`` (Conv2d), ``classifier`` (Linear).

    Args:
        channels: Output channels ``(c1, c2)`` of the two convolutions.
    """

    def __init__(self, channels: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels[0], kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels[0], channels[1], kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(channels[1] * 4 * 4, DIGITS_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for a batch of images, shape ``(N, 64)`` or ``(N, 1, 8, 8)``."""
        return self.classifier(self.features(x.reshape(-1, 1, 8, 8)).flatten(1))


def _seeded(build: Callable[[], _T], seed: int) -> _T:
    """Run ``build`` with the global RNG seeded, leaving the caller's RNG state unchanged."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def digits_mlp(seed: int = 0) -> DigitsMLP:
    """Return a :class:`DigitsMLP` with weights initialised from ``seed``.

    The global RNG is left as it was. Import path for the command line:
    ``prunefw.examples:digits_mlp``.
    """
    return _seeded(DigitsMLP, seed)


def digits_cnn(seed: int = 0) -> DigitsCNN:
    """Return a :class:`DigitsCNN` with weights initialised from ``seed``.

    The global RNG is left as it was. Import path for the command line:
    ``prunefw.examples:digits_cnn``.

    Example:
        >>> import torch
        >>> model = digits_cnn()
        >>> [name for name, _ in model.named_children()]
        ['features', 'classifier']
        >>> model(torch.zeros(2, 64)).shape
        torch.Size([2, 10])
        >>> torch.equal(digits_cnn().features[0].weight, model.features[0].weight)  # seeded
        True
    """
    return _seeded(DigitsCNN, seed)


def demo_net(seed: int = 0) -> DemoNet:
    """Return a :class:`DemoNet` with weights initialised from ``seed``.

    Import path for the command line: ``prunefw.examples:demo_net``.
    """
    return _seeded(DemoNet, seed)


@dataclass(frozen=True)
class DigitsData:
    """A train/test split of the digits.

    Attributes:
        train_x: Training images, float32 ``(N, 64)`` in ``[0, 1]``.
        train_y: Their labels, int64 ``(N,)``.
        test_x: Held-out images.
        test_y: Their labels.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_digits_data(*, seed: int = 0, test_fraction: float = 0.2) -> DigitsData:
    """Load scikit-learn's digits and split them with a seeded permutation.

    Args:
        seed: Seed of the split.
        test_fraction: Fraction of the 1797 images held out for testing.

    Returns:
        The split (pixels scaled to ``[0, 1]``).

    Raises:
        PrunefwError: scikit-learn is not installed.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise PrunefwError(
            "the digits data set comes with scikit-learn, which is not installed: "
            "pip install 'prunefw[demo]'"
        ) from None
    digits = load_digits()
    x = torch.as_tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.as_tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = round(test_fraction * len(x))
    test, train_ = order[:n_test], order[n_test:]
    return DigitsData(x[train_], y[train_], x[test], y[test])


def train(
    model: nn.Module,
    data: DigitsData,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    track: Callable[[Iterable[int], str, int | None], Iterable[int]] | None = None,
    on_step: Callable[[], object] | None = None,
) -> list[float]:
    """Train ``model`` on ``data.train_*`` with Adam and cross-entropy, in place.

    Batches are shuffled by a generator seeded with ``seed``; the global RNG is not used.

    Args:
        model: The model (e.g. :func:`digits_mlp`).
        data: The split.
        epochs: Passes over the training set.
        batch_size: Images per step.
        lr: Adam's learning rate.
        seed: Seed of the shuffling.
        track: Optional progress wrapper, called as ``track(range(epochs), description, epochs)``.
        on_step: Called after every optimizer step, e.g. a
            :meth:`~prunefw.GradualPruner.step` that prunes while training.

    Returns:
        The mean training loss of each epoch.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    epochs_iter: Iterable[int] = range(epochs)
    if track is not None:
        epochs_iter = track(epochs_iter, "training", epochs)
    losses = []
    model.train()
    n = len(data.train_x)
    for _ in epochs_iter:
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(data.train_x[batch]), data.train_y[batch])
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step()
            total += loss.item() * len(batch)
        losses.append(total / n)
    model.eval()
    return losses


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Return the fraction of ``x`` that ``model`` classifies as ``y``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> accuracy(nn.Identity(), torch.eye(4), torch.tensor([0, 1, 0, 3]))
        0.75
    """
    return int((model(x).argmax(dim=1) == y).sum()) / len(y)
