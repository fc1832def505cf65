"""What the save tests share (tests/test_save.py checks the file, test_save_keras.py has
Keras reopen it): the weighted layers, and the compile state of a Keras 3 model compiled
with Adam and sparse categorical cross-entropy."""
import numpy as np


def weighted(layers):
    return [l for l in layers if l.count_params()]


# The training_config Keras 3.15 writes for compile(Adam(), "sparse_categorical_crossentropy",
# metrics=["accuracy"]).
TRAINING_CONFIG = {
    "loss": "sparse_categorical_crossentropy", "loss_weights": None, "metrics": ["accuracy"],
    "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1,
    "jit_compile": False, "optimizer_config": {"class_name": "Adam", "config": {
        "name": "adam", "learning_rate": 0.0010000000474974513, "weight_decay": None,
        "clipnorm": None, "global_clipnorm": None, "clipvalue": None, "use_ema": False,
        "ema_momentum": 0.99, "ema_overwrite_frequency": None, "loss_scale_factor": None,
        "gradient_accumulation_steps": None, "beta_1": 0.9, "beta_2": 0.999,
        "epsilon": 1e-07, "amsgrad": False}}}


def adam_weights(model, seed):
    """Adam's variables as Keras lists them: iteration, learning_rate, then a momentum and
    a velocity per trainable variable (random values, so a mix-up shows)."""
    rng = np.random.default_rng(seed)
    items = [("adam/iteration", np.int64(7)), ("adam/learning_rate", np.float32(1e-3))]
    for layer in weighted(model.layers):
        for (var, _), array in zip(layer.variables(), layer.get_weights()):
            for slot in ("momentum", "velocity"):
                items.append((f"adam/{layer.name}_{var}_{slot}",
                              rng.standard_normal(array.shape).astype(np.float32)))
    return items
