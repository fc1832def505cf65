"""edgecore federated example app (see ../README.md)."""
