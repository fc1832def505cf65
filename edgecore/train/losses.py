"""Losses and the 'accuracy' metric, with Keras 3's names, defaults and resolution rules.

Every loss reduces like Keras's default "sum_over_batch_size": the mean of the per-sample
losses.  Cross-entropies are computed from logits, fused with their gradient in one kernel
(kernels/losses.pxi):
  * from_logits=True: the model output is the logits;
  * from_logits=False and the output comes straight from a softmax (sigmoid) activation:
    the logits behind it, exactly as Keras does (backend/tensorflow/nn.py _get_logits,
    the `_keras_logits` attribute) — no 1e-7 clipping;
  * from_logits=False on any other output: probability-space cross-entropy, which Keras
    computes with clipping; edgecore refuses it (a model ending in a linear layer trained
    with from_logits=False is almost always a mistake) with a clear message.
"""


class Loss:
    keras_name = None
    kind = None  # "sparse_ce", "ce", "bce", "mse"
    needs_logits = False

    def __init__(self, from_logits=False, label_smoothing=0.0, reduction="sum_over_batch_size",
                 name=None, axis=-1):
        if axis != -1:
            raise ValueError(f"{type(self).__name__}(axis=...) other than -1 is not supported")
        if reduction not in ("sum_over_batch_size", "auto", None):
            raise ValueError(f"{type(self).__name__}: reduction={reduction!r} is not supported "
                             f"(only Keras's default, the mean over the batch)")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1)")
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        self.name = name or self.keras_name

    def get_config(self):
        return {"name": self.name, "reduction": "sum_over_batch_size",
                "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


class SparseCategoricalCrossentropy(Loss):
    keras_name = "sparse_categorical_crossentropy"
    kind = "sparse_ce"
    needs_logits = True

    def __init__(self, from_logits=False, ignore_class=None, reduction="sum_over_batch_size",
                 name=None):
        if ignore_class is not None:
            raise ValueError("SparseCategoricalCrossentropy(ignore_class=...) is not supported")
        super().__init__(from_logits, 0.0, reduction, name)

    def get_config(self):
        config = super().get_config()
        del config["label_smoothing"]
        config["ignore_class"] = None
        return config


class CategoricalCrossentropy(Loss):
    keras_name = "categorical_crossentropy"
    kind = "ce"
    needs_logits = True

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name=None):
        super().__init__(from_logits, label_smoothing, reduction, name, axis)


class BinaryCrossentropy(Loss):
    keras_name = "binary_crossentropy"
    kind = "bce"
    needs_logits = True

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name=None):
        super().__init__(from_logits, label_smoothing, reduction, name, axis)


class MeanSquaredError(Loss):
    keras_name = "mean_squared_error"
    kind = "mse"

    def __init__(self, reduction="sum_over_batch_size", name=None):
        super().__init__(False, 0.0, reduction, name)

    def get_config(self):
        return {"name": self.name, "reduction": "sum_over_batch_size"}


_BY_NAME = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
}


def get(identifier):
    """A Loss from a Keras loss name or a Loss instance."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier]()
    raise ValueError(f"loss {identifier!r} is not supported; use one of "
                     f"{sorted(_BY_NAME)} or an edgecore.losses object")


def accuracy_kind(y_true_shape, y_pred_shape):
    """How Keras 3 resolves metrics=['accuracy'] (trainers/compile_utils.py
    is_binary_or_sparse_categorical): binary if the output has one unit, sparse when the
    labels have lower rank (or a last axis of 1 against several units), else categorical."""
    if y_pred_shape[-1] == 1:
        return "binary_accuracy"
    if len(y_true_shape) < len(y_pred_shape) or (y_true_shape[-1] == 1 and y_pred_shape[-1] > 1):
        return "sparse_categorical_accuracy"
    return "categorical_accuracy"


ACCURACIES = ("binary_accuracy", "sparse_categorical_accuracy", "categorical_accuracy")


def metric_names(metrics):
    """The compiled metric names: 'accuracy'/'acc' (resolved per batch like Keras) or an
    explicit accuracy."""
    if metrics is None:
        return []
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    for name in metrics:
        if name not in ("accuracy", "acc") + ACCURACIES:
            raise ValueError(f"metric {name!r} is not supported; use 'accuracy' or one of "
                             f"{list(ACCURACIES)}")
    return metrics
