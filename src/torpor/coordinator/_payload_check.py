"""A trigger's payload checked against the JSON schema of its task's typed parameter (sdk/_payload.py).

The schema comes from the deployment (TaskSettings.payload_schema_json); a
payload that does not match fails the trigger call with the first reason the
validator gives, and nothing is created (a batch is all or nothing).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from torpor._errors import ConfigError


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def check_payload(task_id: str, schema_json: str, payload_json: str) -> None:
    if not schema_json:
        return
    import jsonschema

    validator = _validator(schema_json)
    error = jsonschema.exceptions.best_match(validator.iter_errors(json.loads(payload_json)))
    if error is None:
        return
    title = validator.schema.get("title") or "its parameter type"
    where = "payload" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    raise ConfigError(f"the payload does not fit task {task_id!r}'s parameter type {title}: {where}: {error.message}")
