"""Classifier two-sample test (C2ST) between two sets of timestream chunks.

A small 1-D convolutional network learns to tell set A from set B on one half of
the chunks and is scored on a balanced held-out half (Lopez-Paz & Oquab 2017, ICLR,
"Revisiting classifier two-sample tests"). Accuracy near 0.5 means the network found
no difference, and its binomial (Clopper-Pearson) interval gives the uncertainty.

Chunks go through ``y = asinh(x / scale_w)`` and a global standardization taken
from set A, so the network sees absolute amplitudes: a per-chunk normalization
would hide a generator with the wrong glitch sizes.

Chunks of one MC run share decaying tails, so the train/test split goes by group
(MC run or generator stream) when groups are given: a group sits wholly on one side.
"""

from dataclasses import asdict, dataclass

import numpy as np

from .metrics import binomial_interval

__all__ = ["C2STResult", "build_classifier", "classifier_two_sample_test"]


@dataclass(frozen=True)
class C2STResult:
    """Outcome of one classifier two-sample test.

    Attributes:
        accuracy (float): Fraction of correctly classified held-out chunks.
        n_test (int): Held-out chunks (half from each set).
        n_correct (int): Correctly classified held-out chunks.
        ci_low (float): Lower end of the 95 % Clopper-Pearson interval.
        ci_high (float): Upper end of the interval.
        n_train (int): Training chunks (half from each set).
        epochs (int): Training epochs.
        seed (int): Seed of the split, the weights and the batch order.
    """

    accuracy: float
    n_test: int
    n_correct: int
    ci_low: float
    ci_high: float
    n_train: int
    epochs: int
    seed: int

    def to_dict(self):
        return asdict(self)


def build_classifier(chunk_length, seed):
    """Build the C2ST network: three strided Conv1D layers, pooled, one logit.

    Input shape: (batch, chunk_length, 1). Output shape: (batch, 1), a logit.
    About 3,000 weights, so it trains in seconds on a CPU core.
    """
    import keras
    from keras import layers

    initializer = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((chunk_length, 1))
    x = inputs
    for filters in (8, 16, 16):
        x = layers.Conv1D(
            filters, 7, strides=2, padding="same", activation="relu",
            kernel_initializer=initializer,
        )(x)
    pooled = layers.Concatenate()([layers.GlobalMaxPooling1D()(x), layers.GlobalAveragePooling1D()(x)])
    hidden = layers.Dense(16, activation="relu", kernel_initializer=initializer)(pooled)
    logit = layers.Dense(1, kernel_initializer=initializer)(hidden)
    return keras.Model(inputs, logit, name="c2st_classifier")


def _split_by_group(n_rows, groups, rng):
    """Return a boolean mask of the test rows: whole groups, about half the rows."""
    if groups is None:
        test = np.zeros(n_rows, dtype=bool)
        test[rng.permutation(n_rows)[: n_rows // 2]] = True
        return test
    groups = np.asarray(groups)
    unique = rng.permutation(np.unique(groups))
    if unique.size < 2:
        raise ValueError(
            "A C2ST split by group needs at least 2 groups (MC runs or generator "
            f"streams); got {unique.size}. Pass groups=None to split by chunk."
        )
    sizes = np.array([np.sum(groups == g) for g in unique])
    n_test_groups = int(np.searchsorted(np.cumsum(sizes), n_rows / 2.0)) + 1
    n_test_groups = min(max(n_test_groups, 1), unique.size - 1)
    return np.isin(groups, unique[:n_test_groups])


def _balanced(rows_a, rows_b, rng):
    n = min(rows_a.size, rows_b.size)
    return rng.permutation(rows_a)[:n], rng.permutation(rows_b)[:n]


def classifier_two_sample_test(chunks_a, chunks_b, scale_w, groups_a=None, groups_b=None,
                               seed=0, n_steps=300, max_epochs=50, batch_size=64,
                               learning_rate=2e-3):
    """Train a fresh classifier to separate two sets of chunks and score it.

    Both sets are split into a training and a test half (by group when groups are
    given), each half cut to equal numbers of A and B chunks. The network is
    trained with Adam on the binary cross-entropy for whole epochs totalling at
    least ``n_steps`` batches (small sets get more epochs, up to ``max_epochs``),
    and it is scored once on the test half.

    Args:
        chunks_a (array): (n_a, chunk_length) float64, W. Usually held-out MC.
        chunks_b (array): (n_b, chunk_length) float64, W.
        scale_w (float): Amplitude scale of the asinh map, W.
        groups_a (array): (n_a,) group label per chunk of A (MC run), or None.
        groups_b (array): (n_b,) group label per chunk of B, or None.
        seed (int): Seed of the split, initial weights and batch order.
        n_steps (int): Minimum number of training batches.
        max_epochs (int): Upper limit of the epochs, which bounds the time on tiny sets.
        batch_size (int): Chunks per step.
        learning_rate (float): Adam learning rate.

    Returns:
        (C2STResult): Accuracy, its interval and the sizes.
    """
    import keras

    a = np.asarray(chunks_a, dtype=np.float64)
    b = np.asarray(chunks_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"chunks_a and chunks_b must be 2-D with one chunk length. Got shapes "
            f"{a.shape} and {b.shape}."
        )
    if min(a.shape[0], b.shape[0]) < 8:
        raise ValueError(
            f"The C2ST needs at least 8 chunks per set. Got {a.shape[0]} and {b.shape[0]}."
        )
    if not (np.isfinite(scale_w) and scale_w > 0):
        raise ValueError(f"scale_w must be a positive number of W. Got {scale_w!r}.")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC257]))

    test_a = _split_by_group(a.shape[0], groups_a, rng)
    test_b = _split_by_group(b.shape[0], groups_b, rng)
    train_rows = _balanced(np.flatnonzero(~test_a), np.flatnonzero(~test_b), rng)
    test_rows = _balanced(np.flatnonzero(test_a), np.flatnonzero(test_b), rng)

    y_a = np.arcsinh(a / scale_w)
    y_b = np.arcsinh(b / scale_w)
    center, spread = float(np.mean(y_a)), float(np.std(y_a)) or 1.0

    def stack(rows):
        inputs = np.concatenate([y_a[rows[0]], y_b[rows[1]]])
        inputs = ((inputs - center) / spread).astype(np.float32)[..., None]
        labels = np.concatenate([np.zeros(rows[0].size), np.ones(rows[1].size)]).astype(np.float32)
        return inputs, labels

    x_train, label_train = stack(train_rows)
    x_test, label_test = stack(test_rows)
    shuffle = rng.permutation(x_train.shape[0])
    x_train, label_train = x_train[shuffle], label_train[shuffle]

    steps_per_epoch = int(np.ceil(x_train.shape[0] / batch_size))
    epochs = min(int(np.ceil(n_steps / steps_per_epoch)), int(max_epochs))
    keras.utils.set_random_seed(int(seed))
    model = build_classifier(a.shape[1], int(seed))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    model.fit(x_train, label_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    logits = np.concatenate([
        keras.ops.convert_to_numpy(model(x_test[start:start + 256], training=False)).ravel()
        for start in range(0, x_test.shape[0], 256)
    ])
    n_correct = int(np.sum((logits > 0) == (label_test > 0.5)))
    n_test = int(label_test.size)
    low, high = binomial_interval(n_correct, n_test)
    return C2STResult(
        accuracy=n_correct / n_test,
        n_test=n_test,
        n_correct=n_correct,
        ci_low=low,
        ci_high=high,
        n_train=int(label_train.size),
        epochs=int(epochs),
        seed=int(seed),
    )
