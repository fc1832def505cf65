"""edgecore.federated: train a transfer head across devices with Flower, only weights travel.

    pip install "edgecore[federated]"          # Flower (flwr) in the tested range

    from edgecore.federated import HeadClient, class_skewed_split, make_client_app, make_server_app

HeadClient is the device side without any networking: the bundled Keras backbone, frozen,
with a new Dense head (ec.transfer.new_head); the backbone runs once per local sample (the
feature cache, kept in a .npy file so later rounds, each in a fresh ClientApp process,
train only the head); the head's weights go out in Keras order (the model's trainable
weights) and come back in with set_weights.  make_client_app / make_server_app wrap it in
Flower's Message API (ClientApp, ServerApp, ArrayRecord, flwr.serverapp.strategy FedAvg or
FedAdam, optionally wrapped in Flower's differential-privacy strategy).
"""
try:
    import flwr  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a venv without flwr
    raise ImportError("edgecore.federated needs Flower: pip install \"edgecore[federated]\" "
                      f"(flwr>=1.42,<2); importing flwr failed: {exc}") from None

from .client import HeadClient, trainable_arrays  # noqa: E402
from .data import class_skewed_split, client_slice  # noqa: E402
from .apps import make_client_app, make_server_app, make_strategy  # noqa: E402

__all__ = ["HeadClient", "class_skewed_split", "client_slice", "make_client_app",
           "make_server_app", "make_strategy", "trainable_arrays"]
