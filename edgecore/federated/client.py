"""The device side of federated head training, with no networking of its own."""
import hashlib
import os

import numpy as np

from .. import load, optimizers, transfer, utils
from ..layers.model import weight_trainable_flags


def trainable_arrays(model):
    """The model's trainable weights (Keras order: layer by layer, each layer's trainable
    variables in its get_weights order) - what leaves the device."""
    return model.trainable_weights


class HeadClient:
    """One device: `backbone` (a Keras .h5/.keras) frozen with a new Dense(classes) head,
    its local training and held-out data (uint8 or float images at the backbone's input
    size; use ec.utils.resize_images), trained with Adam(learning_rate).

    cache_dir: where the frozen backbone's output for the local samples is kept (.npy,
    named by a hash of the backbone file and the data; written atomically), so every
    round after the first - even in a new process - costs only the head.
    checkpoint: a .h5 the trained model is saved to after each fit (atomic: a killed
    client leaves the previous complete file)."""

    def __init__(self, backbone, classes, x_train, y_train, x_test=None, y_test=None, *,
                 learning_rate=1e-3, batch_size=32, seed=0, cache_dir=None, checkpoint=None,
                 memory_budget=None):
        utils.set_random_seed(seed)
        self.backbone = os.fspath(backbone)
        self.model = transfer.new_head(load(self.backbone, memory_budget=memory_budget),
                                       classes=classes, seed=seed)
        self.model.compile(optimizer=optimizers.Adam(learning_rate),
                           loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        self.x_train, self.y_train = x_train, np.asarray(y_train)
        self.x_test, self.y_test = x_test, None if y_test is None else np.asarray(y_test)
        self.batch_size, self.cache_dir, self.checkpoint = int(batch_size), cache_dir, checkpoint
        self._features = {}

    # -- weights ---------------------------------------------------------------------------
    def get_trainable(self):
        return trainable_arrays(self.model)

    def set_trainable(self, arrays):
        """Install trainable weights (get_trainable order and shapes) with set_weights,
        layer by layer; the frozen base is left as it is (it never travels)."""
        arrays = [np.asarray(a, np.float32) for a in arrays]
        updates, start = [], 0
        for layer in self.model.graph.layers:
            flags = weight_trainable_flags(layer, self.model.trainable, top=False)
            if not any(flags):
                continue
            current = layer.get_weights()
            for i, flag in enumerate(flags):
                if flag:
                    if start >= len(arrays):
                        raise ValueError(f"set_trainable: {len(arrays)} arrays given, the "
                                         f"model has {len(self.get_trainable())} trainable")
                    if arrays[start].shape != np.shape(current[i]):
                        raise ValueError(f"set_trainable: layer {layer.name!r} weight {i} "
                                         f"has shape {np.shape(current[i])}, got "
                                         f"{arrays[start].shape}")
                    current[i] = arrays[start]
                    start += 1
            updates.append((layer, current))
        if start != len(arrays):
            raise ValueError(f"set_trainable: {len(arrays)} arrays given, the model has "
                             f"{start} trainable")
        for layer, values in updates:
            layer.set_weights(values)

    # -- data --------------------------------------------------------------------------------
    def _cache_path(self, name, x):
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256()
        with open(self.backbone, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        x = np.ascontiguousarray(x)
        digest.update(repr((x.shape, str(x.dtype))).encode())
        digest.update(x.data)
        os.makedirs(self.cache_dir, exist_ok=True)
        return os.path.join(self.cache_dir, f"features-{name}-{digest.hexdigest()[:20]}.npy")

    def features(self, name):
        """The FeatureCache of the training ("train") or held-out ("test") samples."""
        found = self._features.get(name)
        if found is None:
            x = self.x_train if name == "train" else self.x_test
            found = self._features[name] = self.model.cache_features(
                x, batch_size=self.batch_size, path=self._cache_path(name, x))
        return found

    # -- the two things a round asks ----------------------------------------------------------
    def fit(self, epochs=1):
        """Train the head on the local data; {'train_loss', 'train_accuracy',
        'num-examples'} of the last epoch."""
        history = self.model.fit(self.features("train"), self.y_train, epochs=int(epochs),
                                 batch_size=self.batch_size, verbose=0)
        if self.checkpoint is not None:
            self.model.save(self.checkpoint)  # atomic (Model.save)
        return {"train_loss": float(history.history["loss"][-1]),
                "train_accuracy": float(history.history["accuracy"][-1]),
                "num-examples": int(len(self.y_train))}

    def evaluate(self):
        """{'eval_loss', 'eval_accuracy', 'num-examples'} on the held-out data."""
        if self.y_test is None or len(self.y_test) == 0:
            return {"eval_loss": 0.0, "eval_accuracy": 0.0, "num-examples": 0}
        loss, accuracy = self.model.evaluate(self.features("test"), self.y_test,
                                             batch_size=self.batch_size)
        return {"eval_loss": float(loss), "eval_accuracy": float(accuracy),
                "num-examples": int(len(self.y_test))}
