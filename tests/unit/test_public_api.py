"""The curated public surface: everything in torpor.__all__ exists and imports cheaply."""

import subprocess
import sys

import torpor


def test_all_names_exist():
    missing = [name for name in torpor.__all__ if not hasattr(torpor, name)]
    assert not missing
    assert sorted(torpor.__all__) == torpor.__all__


def test_task_code_imports_torpor_without_grpc():
    """Inside a container only torpor and protobuf exist: importing the SDK must not need grpc."""
    code = ("import sys; sys.modules['grpc'] = None\n"
            "from torpor import task, wait, Retry, checkpoint, context, logger, metadata\n"
            "import torpor.sdk._entry\nprint('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_client_is_exported_lazily():
    from torpor.client import Client

    assert torpor.Client is Client
