"""The network of each container of one agent: claimed when its spec is made, given back when it goes.

The namespaces themselves are agent/_netns.py's; this is the agent's book of
which container holds which, the policy on the host mode, and the prestart
hook written into the container's bundle.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from torpor._errors import ConfigError
from torpor.agent._netns import NetworkPool, RunNetwork, check_mode

log = logging.getLogger(__name__)

HOST_REFUSED = ("the task asks for network='host', which gives up network isolation, and this agent does not "
                "allow it: start the agent with --allow-host-network, or use 'egress' or 'none'")


class ContainerNetworks:
    def __init__(self, pool: NetworkPool, *, default: str, allow_host: bool, bundles: Path) -> None:
        self.pool = pool
        self.default = check_mode(default)
        self.allow_host = allow_host
        self.bundles = bundles  # a container's bundle directory, removed with it, holds its hook
        self._held: dict[str, RunNetwork] = {}

    def claim(self, container_id: str, mode: str | None) -> RunNetwork:
        """A namespace of ``mode`` (the agent's default if None) for the container."""
        mode = check_mode(mode or self.default)
        if mode == "host" and not self.allow_host:
            raise ConfigError(HOST_REFUSED)
        net = self.pool.create(mode)
        self._held[container_id] = net
        return net

    def hook(self, container_id: str, net: RunNetwork) -> str | None:
        """The prestart hook that configures the namespace, written into the bundle (None: nothing to do)."""
        if not net.isolated:
            return None
        bundle = self.bundles / container_id
        bundle.mkdir(parents=True, exist_ok=True)
        hook = bundle / "net-hook.sh"
        hook.write_text(net.hook_script())
        return str(hook)

    def of(self, container_id: str) -> RunNetwork | None:
        return self._held.get(container_id)

    def mode_of(self, container_id: str) -> str:
        net = self._held.get(container_id)
        return net.mode if net is not None else "host"

    def held(self) -> list[str]:
        return list(self._held)

    @contextlib.contextmanager
    def given_back_on_failure(self, container_id: str) -> Iterator[None]:
        """Until the launch (whose failure cleans up the whole container), a failure frees the network claimed."""
        try:
            yield
        except BaseException:
            self.release(container_id)
            raise

    def release(self, container_id: str) -> None:
        net = self._held.pop(container_id, None)
        if net is not None:
            try:
                self.pool.release(net)
            except Exception:  # a leftover is removed when its index is next claimed
                log.warning("could not remove the network of %s", container_id, exc_info=True)

    def release_all(self) -> None:
        """Remove every network namespace still held (their containers are gone)."""
        for container_id in self.held():
            self.release(container_id)
