"""The ServerApp: Flower's FedAvg or FedAdam (run config `strategy`) on the head's weights."""
from edgecore.federated import make_server_app

app = make_server_app()
