"""Tasks with third-party packages (numpy from torpor.toml, httpx from requirements.txt)."""

import hashlib

import httpx
import numpy as np

from torpor import metadata, task, wait


@task(id="np-hold")
def np_hold(payload):
    """Holds a numpy array across a suspension (and a move to another host) and checks it is unchanged."""
    mb = payload.get("mb", 200)
    array = np.random.default_rng(7).integers(0, 2**63, size=(mb << 20) // 8, dtype=np.int64)
    before = hashlib.sha256(array.tobytes()).hexdigest()
    token = wait.create_token(timeout=600)
    metadata.set("token", token.id)
    answer = wait.for_token(token)
    after = hashlib.sha256(array.tobytes()).hexdigest()
    return {"before": before, "after": after, "answer": answer, "sum": int(array[:1000].sum() % 1000003),
            "numpy": np.__version__, "numpy_at": np.__file__, "httpx": httpx.__version__}
