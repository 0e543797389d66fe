"""The Python client of the coordinator's public API."""

from torpor.client._client import DEFAULT_ADDRESS, Client, ClientTLS, trigger_request
from torpor.client._convert import agent_dict, checkpoint_dict, run_dict

__all__ = ["DEFAULT_ADDRESS", "Client", "ClientTLS", "agent_dict", "checkpoint_dict", "run_dict", "trigger_request"]
