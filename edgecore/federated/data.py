"""Disjoint, class-skewed slices of a labelled set: each client's data is not identically
distributed (most of a class lives on its 'home' client), as phones' photos are."""
import numpy as np


def class_skewed_split(labels, clients, skew=0.8, seed=0):
    """Index arrays, one per client, disjoint and together covering every sample: class c's
    home is client c % clients and receives `skew` of its samples, the rest are shared out
    evenly over the others (skew=1/clients is an IID split, 1.0 gives every class to one
    client)."""
    labels = np.asarray(labels).reshape(-1)
    clients = int(clients)
    if clients < 1:
        raise ValueError(f"clients must be at least 1, got {clients}")
    if not 0.0 <= skew <= 1.0:
        raise ValueError(f"skew must be between 0 and 1, got {skew}")
    rng = np.random.default_rng(seed)
    parts = [[] for _ in range(clients)]
    for c in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == c))
        home = int(c) % clients
        cut = int(round(skew * len(index))) if clients > 1 else len(index)
        parts[home].append(index[:cut])
        others = [k for k in range(clients) if k != home]
        for k, piece in zip(others, np.array_split(index[cut:], max(1, len(others)))):
            parts[k].append(piece)
    return [np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64)
            for p in parts]


def client_slice(npz_path, client, clients, skew=0.8, seed=0, limit=None):
    """(x_train, y_train, x_test, y_test) of one client from a Fashion-MNIST-style .npz
    (keys x_train, y_train, x_test, y_test): its class-skewed share of both splits, the
    test share as its held-out data.  limit keeps only the first `limit` training samples
    (a tiny-data client)."""
    with np.load(npz_path, allow_pickle=False) as data:
        x_train, y_train = data["x_train"], data["y_train"]
        x_test, y_test = data["x_test"], data["y_test"]
    train = class_skewed_split(y_train, clients, skew, seed)[client]
    test = class_skewed_split(y_test, clients, skew, seed + 1)[client]
    if limit is not None:
        train = train[:int(limit)]
    return x_train[train], y_train[train], x_test[test], y_test[test]
