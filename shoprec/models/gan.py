"""GAN family: CFGAN (Chae et al., CIKM 2018) in Keras 3 on TensorFlow.

CFGAN works on implicit feedback because of two choices this module keeps:

* *Vector-wise* adversarial training: the generator maps a shopper's condition vector
  (their binary interaction row) to a real-valued vector over all items, and the
  discriminator judges whole purchase vectors, real against generated, both conditioned
  on the same row. The generated vector is masked to the shopper's interacted items before
  the discriminator sees it, so the generator is not asked to produce discrete samples.
* *ZR* and *PM*: on their own, masked vectors let the generator output 1 everywhere. Each
  step samples negative items (items the shopper has not touched): the generator's output
  on a ``zr_ratio`` share of them is pulled to zero (zero-reconstruction), and a
  ``pm_ratio`` share is left unmasked in the vector shown to the discriminator (partial
  masking), where the real vector is 0.

Scoring is one forward pass of the generator over the shopper's row, so new shoppers are
folded in without retraining. TensorFlow is imported inside the methods only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from shoprec.errors import ModelFitError
from shoprec.models.autoencoder import (
    FusedAdam,
    _configure_tensorflow,
    seeded_initializers,
    sparse_dense,
    sparse_scored_rows,
)
from shoprec.models.base import FitContext, Recommender, check_finite
from shoprec.models.epochs import (
    BoundedRows,
    check_half_life,
    coo_indices,
    decayed_rate,
    scheduled_epochs,
    train_epochs,
    trains_on_sparse_rows,
)
from shoprec.models.storage import load_arrays, save_arrays

logger = logging.getLogger(__name__)


class CFGAN(BoundedRows, Recommender):
    """Collaborative filtering GAN with zero-reconstruction and partial masking.

    Both networks are multi-layer perceptrons with sigmoid hidden layers and a linear
    output (a bounded output layer saturates and stalls training), trained alternately with
    Adam on batches of shoppers: one discriminator step, then one generator step, each with
    freshly sampled negative items. The generator uses the non-saturating loss
    ``-log D(G(c)|c)`` plus ``zr_coefficient`` times the squared outputs on the ZR sample
    (summed over items, averaged over shoppers, as in the paper). With validation data,
    training stops early on validation ndcg@10 and keeps the best epoch's generator.

    Every epoch checks for divergence: a non-finite loss, or a generator whose outputs no
    longer depend on the shopper (on a fixed probe of shoppers, the mean over items of the
    standard deviation across shoppers, divided by the standard deviation of all outputs,
    below ``collapse_tolerance``). Either raises :class:`ModelFitError`,
    which the pipeline records as a failed candidate.

    Args:
        generator_hidden: Widths of the generator's hidden layers.
        discriminator_hidden: Widths of the discriminator's hidden layers.
        zr_ratio: Share of each shopper's negative items in the zero-reconstruction sample.
        pm_ratio: Share of each shopper's negative items left unmasked for the discriminator.
        zr_coefficient: Weight of the zero-reconstruction term (α in the paper).
        epochs: Maximum epochs (fewer with a half-life: see ``learning_rate_half_life``).
        batch_size: Shoppers per step.
        learning_rate: Adam learning rate of both networks at the first step.
        learning_rate_half_life: Steps over which the learning rate halves (exponential
            decay; ``None``: constant). At a constant rate the GAN's validation figure
            peaks after some hundreds of steps and then falls and swings, so where early
            stopping stops, and what a refit for that many epochs lands on, is partly
            chance; a decaying rate lets the two networks settle. Counted in steps, not
            epochs, because an epoch is 60 steps on one shop and 300 on another. The refit
            replays the same schedule. No epoch starts once the rate is under 1% of the
            first (6.6 half-lives), whatever ``epochs`` allows.
        weight_decay: L2 penalty on both networks' kernels.
        patience: Epochs without validation improvement before stopping.
        collapse_tolerance: Smallest acceptable dependence of the outputs on the shopper.
        seed: Seed of initialisation, negative sampling and batch order.
        threads: TensorFlow threads (0: TensorFlow's default).
        train_users: Train on a seeded sample of at most this many shoppers' rows (``None``:
            all); every shopper is still scored from their own row.
        vocabulary: The generator reads and scores this many most-interacted items
            (``None``: all); others are never recommended by it.
        history_weights: The power a shopper's row is read at: its weights, each row
            divided by its largest, raised to it (0: as 0/1; 1: the weights as they are);
            ``None``: the best of :data:`~shoprec.models.base.READING_EXPONENTS` on
            validation (0/1 without validation data). See
            :class:`~shoprec.models.base.HistoryWeights`.
    """

    family = "gan"
    name = "cfgan"
    slow_to_train = True
    threads_per_process = True
    #: Recipes from before the schedule existed trained at a constant rate: so they still do.
    added_params: ClassVar[dict[str, Any]] = {**BoundedRows.added_params,
                                              "learning_rate_half_life": None}

    def __init__(self, generator_hidden: tuple[int, ...] | list[int] = (256,),
                 discriminator_hidden: tuple[int, ...] | list[int] = (64,),
                 zr_ratio: float = 0.8, pm_ratio: float = 0.11, zr_coefficient: float = 0.011,
                 epochs: int = 60, batch_size: int = 64, learning_rate: float = 2.6e-3,
                 learning_rate_half_life: int | None = 400,
                 weight_decay: float = 0.0, patience: int = 5,
                 collapse_tolerance: float = 1e-3, seed: int = 0, threads: int = 0,
                 train_users: int | None = 20_000, vocabulary: int | None = 10_000,
                 history_weights: float | None = None) -> None:
        self.history_weights = history_weights
        self.generator_hidden = generator_hidden
        self.discriminator_hidden = discriminator_hidden
        self.zr_ratio = zr_ratio
        self.pm_ratio = pm_ratio
        self.zr_coefficient = zr_coefficient
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_half_life = learning_rate_half_life
        self.weight_decay = weight_decay
        self.patience = patience
        self.collapse_tolerance = collapse_tolerance
        self.seed = seed
        self.train_users = train_users
        self.vocabulary = vocabulary
        self.threads = threads

    def _check_params(self) -> None:
        for what in ("zr_ratio", "pm_ratio"):
            value = getattr(self, what)
            if not 0.0 <= value <= 1.0:
                raise ModelFitError(f"cfgan: {what} must be in [0, 1], got {value}")
        if self.batch_size < 1 or self.epochs < 1:
            raise ModelFitError("cfgan: batch_size and epochs must be at least 1")
        check_half_life(self.name, self.learning_rate_half_life)

    def _mlp(self, inputs: int, hidden: tuple[int, ...] | list[int], outputs: int, name: str,
             initializer: Callable[[], Any]) -> Any:
        """Sigmoid hidden layers and a linear output, as in the paper's networks."""
        import keras

        regularizer = keras.regularizers.L2(self.weight_decay) if self.weight_decay else None
        layers = [keras.Input((inputs,))]
        layers += [keras.layers.Dense(int(width), activation="sigmoid",
                                      kernel_initializer=initializer(),
                                      kernel_regularizer=regularizer) for width in hidden]
        layers.append(keras.layers.Dense(outputs, kernel_initializer=initializer(),
                                         kernel_regularizer=regularizer))
        return keras.Sequential(layers, name=name)

    def _build(self, n_items: int) -> None:
        initializer = seeded_initializers(self.seed)
        self.generator_ = self._mlp(n_items, self.generator_hidden, n_items, "generator",
                                    initializer)
        # The discriminator reads a purchase vector next to its condition vector; it
        # returns a logit, so the losses use the numerically stable logit form.
        self.discriminator_ = self._mlp(2 * n_items, self.discriminator_hidden, 1,
                                        "discriminator", initializer)

    def fit(self, interactions: sp.csr_matrix, context: FitContext | None = None) -> CFGAN:
        """Train the generator and discriminator alternately; early-stop on validation.

        Raises:
            ModelFitError: Bad hyperparameters, no data, non-finite losses or a collapsed
                generator.
        """
        self._check_params()
        _configure_tensorflow(self.threads)
        import tensorflow as tf

        self.history_weights_ = None  # early stopping scores 0/1 rows (unless told)
        matrix, users = self._training_rows(interactions)
        self._build(matrix.shape[1])
        generator, discriminator = self.generator_, self.discriminator_
        g_variables = generator.trainable_variables
        d_variables = discriminator.trainable_variables
        g_optimizer = FusedAdam(g_variables, self.learning_rate)
        d_optimizer = FusedAdam(d_variables, self.learning_rate)
        sampler = tf.random.Generator.from_seed(self.seed)
        zr_ratio, pm_ratio = float(self.zr_ratio), float(self.pm_ratio)
        zr_coefficient = float(self.zr_coefficient)

        def cross_entropy(logits: tf.Tensor, label: float) -> tf.Tensor:
            return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
                labels=tf.fill(tf.shape(logits), label), logits=logits))

        # Sparse rows (below SPARSE_INPUT_DENSITY): the products of the 0/1 condition
        # with the generator's first layer and the discriminator's condition half, and of
        # the real purchase vector with the discriminator, become sparse products. The
        # same step up to rounding: the masks are drawn alike from the dense rows.
        self.sparse_input_ = trains_on_sparse_rows(matrix, users)
        n_items = matrix.shape[1]
        g_first, *g_rest = generator.layers

        def generate(real: tf.Tensor, condition: tf.SparseTensor | None) -> tf.Tensor:
            if condition is None:
                return generator(real, training=True)
            hidden = sparse_dense(g_first, condition)
            for layer in g_rest:
                hidden = layer(hidden, training=True)
            return hidden

        def step(real: tf.Tensor, condition: tf.SparseTensor | None,
                 ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            negatives = 1.0 - real
            shape = tf.shape(real)
            # Negative items sampled afresh for each step: PM for the discriminator's view,
            # ZR for the generator's reconstruction penalty.
            pm = tf.cast(sampler.uniform(shape) < pm_ratio, tf.float32) * negatives
            zr = tf.cast(sampler.uniform(shape) < zr_ratio, tf.float32) * negatives
            shown = real + pm
            size = tf.shape(real)[0]
            with tf.GradientTape() as g_tape:
                # One generator pass serves both steps: its weights do not change during
                # the discriminator step.
                generated = generate(real, condition)
                with g_tape.stop_recording(), tf.GradientTape() as d_tape:
                    # Real and generated vectors, each next to its condition, in one batch.
                    fake = tf.stop_gradient(generated) * shown
                    vectors = [real if condition is None else condition, fake]
                    logits = self._judge(vectors, real, condition)
                    d_loss = (cross_entropy(logits[:size], 1.0)
                              + cross_entropy(logits[size:], 0.0)
                              + tf.add_n([0.0, *discriminator.losses]))
                with g_tape.stop_recording():
                    d_optimizer.apply(d_tape.gradient(d_loss, d_variables))
                # The generator step sees the discriminator just updated.
                d_fake = self._judge([generated * shown], real, condition)
                adversarial = cross_entropy(d_fake, 1.0)
                reconstruction = tf.reduce_mean(tf.reduce_sum(zr * tf.square(generated), axis=1))
                g_loss = adversarial + zr_coefficient * reconstruction + tf.add_n(
                    [0.0, *generator.losses])
            g_optimizer.apply(g_tape.gradient(g_loss, g_variables))
            return d_loss, g_loss, reconstruction

        # Any batch size: traced once per fit, not again for an epoch's last, shorter batch
        # (each trace took most of a second). No autograph: as in the autoencoders' fit.
        @tf.function(autograph=False,
                     input_signature=[tf.TensorSpec([None, n_items], tf.float32)])
        def train_step(real: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            return step(real, None)

        @tf.function(autograph=False, input_signature=[tf.TensorSpec([None, None], tf.float32),
                                                        tf.TensorSpec([None, 2], tf.int64)])
        def sparse_step(real: tf.Tensor, indices: tf.Tensor,
                        ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            condition = tf.SparseTensor(indices, tf.ones(tf.shape(indices)[:1]),
                                        tf.shape(real, out_type=tf.int64))
            return step(real, condition)

        rng = np.random.default_rng(self.seed)
        probe = matrix[np.sort(rng.choice(users, size=min(len(users), 256), replace=False))]

        steps = 0

        def set_rate() -> float:
            rate = decayed_rate(self.learning_rate, self.learning_rate_half_life, steps)
            if self.learning_rate_half_life is not None:
                g_optimizer.set_learning_rate(rate)
                d_optimizer.set_learning_rate(rate)
            return rate

        def run_epoch(epoch: int) -> dict[str, float]:
            nonlocal steps
            order = rng.permutation(users)
            losses = []
            for start in range(0, len(order), self.batch_size):
                rate = set_rate()
                steps += 1
                rows = matrix[order[start:start + self.batch_size]]
                if self.sparse_input_:
                    result = sparse_step(tf.constant(rows.toarray()),
                                         tf.constant(coo_indices(rows)))
                else:
                    result = train_step(tf.constant(rows.toarray()))
                losses.append([float(v) for v in result])
            d_loss, g_loss, reconstruction = np.mean(losses, axis=0)
            record = {"discriminator_loss": float(d_loss), "generator_loss": float(g_loss),
                      "zero_reconstruction": float(reconstruction), "learning_rate": rate}
            self._check_divergence(epoch, record, probe)
            return record

        self.history_, self.best_epoch_ = train_epochs(
            self, scheduled_epochs(self.name, self.epochs, self.learning_rate_half_life,
                                   len(users), self.batch_size), self.patience, run_epoch,
            lambda: [w.copy() for w in generator.get_weights()], generator.set_weights,
            context)
        self._choose_history_weights(context)
        return self

    def _judge(self, vectors: list[Any], real: Any, condition: Any | None) -> Any:
        """The discriminator's logits of each vector next to the batch's condition.

        Its first layer reads [vector, condition]: the vector's half and the condition's
        half of the kernel are two products, and the condition's is made once a call
        (twice a step: the discriminator's weights change between its two passes) rather
        than once with each vector (three times a step).

        Args:
            vectors: Purchase vectors (dense, or the real one as a ``tf.SparseTensor``).
            real: The batch's dense 0/1 rows.
            condition: The same rows as a ``tf.SparseTensor`` on sparse rows, else None.
        """
        import tensorflow as tf

        def product(rows: Any, kernel: Any) -> Any:
            if isinstance(rows, tf.SparseTensor):
                return tf.sparse.sparse_dense_matmul(rows, kernel)
            return tf.matmul(rows, kernel)

        first, *rest = self.discriminator_.layers
        n_items = first.kernel.shape[0] // 2
        top, bottom = first.kernel[:n_items], first.kernel[n_items:]
        conditioned = product(real if condition is None else condition, bottom) + first.bias
        hidden = first.activation(tf.concat([product(v, top) + conditioned for v in vectors],
                                            axis=0))
        for layer in rest:
            hidden = layer(hidden, training=True)
        return hidden

    def _check_divergence(self, epoch: int, record: dict[str, float],
                          probe: sp.csr_matrix) -> None:
        """Raise :class:`ModelFitError` on non-finite losses or a collapsed generator."""
        bad = [k for k, v in record.items() if not np.isfinite(v)]
        if bad:
            raise ModelFitError(
                f"cfgan diverged at epoch {epoch}: {', '.join(bad)} became NaN or infinite; "
                "lower learning_rate or zr_coefficient")
        outputs = self._generate(probe)
        if not np.all(np.isfinite(outputs)):
            raise ModelFitError(f"cfgan diverged at epoch {epoch}: the generator's outputs "
                                "are NaN or infinite; lower learning_rate")
        # A collapsed generator gives (nearly) the same vector to every shopper: the spread
        # of each item's output across shoppers vanishes next to the spread of all outputs.
        # The ratio is scale-free (the output layer is linear); all-constant output is 0.
        total = float(outputs.std())
        dependence = float(outputs.std(axis=0).mean()) / total if total > 0 else 0.0
        record["user_dependence"] = dependence
        if len(outputs) > 1 and dependence < self.collapse_tolerance:
            raise ModelFitError(
                f"cfgan collapsed at epoch {epoch}: the generator's outputs no longer depend "
                f"on the shopper (spread across shoppers / spread of all outputs = "
                f"{dependence:.2e} < collapse_tolerance {self.collapse_tolerance:g}); lower "
                "learning_rate or weight_decay, or change zr_coefficient")

    def _generate(self, rows: sp.csr_matrix) -> np.ndarray:
        import tensorflow as tf

        # Rows over the vocabulary (the 0/1 training matrix, or _in_vocabulary's output).
        out = np.empty(rows.shape, dtype=np.float32)
        first, *rest = self.generator_.layers
        for start in range(0, rows.shape[0], 1024):
            part = rows[start:start + 1024]
            sparse = sparse_scored_rows(part)
            if sparse is None:
                generated = self.generator_(tf.constant(part.toarray()), training=False)
            else:
                generated = sparse_dense(first, sparse)
                for layer in rest:
                    generated = layer(generated, training=False)
            out[start:start + 1024] = np.asarray(generated)
        return out

    @property
    def selected_params_(self) -> dict[str, Any]:
        """The refit trains as many epochs as early stopping kept, reading rows alike."""
        return {"epochs": self.best_epoch_ + 1, "history_weights": self._reading_exponent()}

    def score(self, user_rows: sp.csr_matrix) -> np.ndarray:
        """The generator's output for each row (0/1 or weighted): one forward pass."""
        outputs = self._generate(self._in_vocabulary(user_rows))
        return self._to_catalogue(check_finite(outputs, self.name))

    @property
    def n_items_(self) -> int:
        """Number of items the model scores."""
        return self.catalogue_items_

    def _save_state(self, folder: Path) -> None:
        self._save_vocabulary(folder)
        # Only the generator scores; its weights go to a plain .npz, layer by layer.
        weights = self.generator_.get_weights()
        save_arrays(folder / "generator.npz", {f"w{i:03d}": w for i, w in enumerate(weights)},
                    self.storage_precision_)
        (folder / "history.json").write_text(json.dumps({"history": self.history_,
                                                         "best_epoch": self.best_epoch_}))

    def _load_state(self, folder: Path) -> None:
        state = load_arrays(folder / "generator.npz")
        weights = [state[key] for key in sorted(state)]
        n_items = weights[0].shape[0]
        self.generator_ = self._mlp(n_items, self.generator_hidden, n_items, "generator",
                                    seeded_initializers(self.seed))
        self.generator_.set_weights(weights)
        self._load_vocabulary(folder, n_items)
        state = json.loads((folder / "history.json").read_text())
        self.history_, self.best_epoch_ = state["history"], state["best_epoch"]
