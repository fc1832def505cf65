"""The ClientApp: edgecore.federated's, configured by the SuperNode's --node-config."""
from edgecore.federated import make_client_app

app = make_client_app()
