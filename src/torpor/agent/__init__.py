"""The agent: one per host. Runs tasks in runc containers, snapshots them with CRIU."""

from torpor._seal import Kek, Keyring
from torpor.agent._containers import AgentConfig, Container, ContainerManager
from torpor.agent._criu import CriuInfo, criu_check, find_criu
from torpor.agent._oci import Limits
from torpor.agent._runc import Runc
from torpor.agent._snapshot import Manifest

__all__ = ["AgentConfig", "Container", "ContainerManager", "CriuInfo", "Kek", "Keyring", "Limits", "Manifest", "Runc",
           "criu_check", "find_criu"]
