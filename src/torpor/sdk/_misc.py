"""``logger`` and ``metadata`` for task code."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from torpor._errors import ConfigError

logger = logging.getLogger("torpor.task")
"""Task logging; lines go to the run's stderr log (``torpor runs logs RUN``)."""


def _setup_task_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class _Metadata:
    """Small JSON facts about a run (progress, counts) that show in ``torpor runs show``."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    def set(self, key: str, value: Any) -> None:
        """Set one key and store the whole metadata with the run.

        Raises ``torpor.LimitExceeded`` (``limit``: the agent's bound in bytes,
        ``actual``: the size this update would have) when the metadata's JSON
        would be too big; the key then keeps its earlier value, here and in
        what is stored.
        """
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"metadata.set({key!r}, ...): value is not JSON-serialisable: {exc}") from exc
        missing = object()
        before = self._data.get(key, missing)
        self._data[key] = value
        try:
            self._flush()
        except BaseException:
            if before is missing:
                del self._data[key]
            else:
                self._data[key] = before
            raise

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def all(self) -> dict[str, Any]:
        return dict(self._data)

    def _flush(self) -> None:
        from torpor.sdk._context import in_run

        if not in_run():
            return
        from torpor._proto.v1 import runtime_pb2 as rt
        from torpor.sdk._runtime import call

        call(rt.RuntimeRequest(metadata=rt.RuntimeMetadata(metadata_json=json.dumps(self._data))))


metadata = _Metadata()
