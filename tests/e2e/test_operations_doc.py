"""docs/operations.md, the operator guide, checked against the product.

Every `torpor ...` command the guide shows (its sh blocks and the complete
commands in its prose) must parse with the real click CLI, and every flag and
environment variable of its "Configuration reference" must be the CLI's. The
commands that test_by_hand.py does not already run are then run as written,
but for placeholders and host names: `torpor doctor` (with Postgres and the
store), the database step, `torpor keys list|revoke`, `torpor install-service`
and `torpor snapshots list|fetch`. If the guide and the product drift apart,
this file fails and names the line.

Step 3 of "Installing" (a virtualenv from /usr/bin/python3 and pip install) is
not repeated here: `make setup`'s venv step does the same thing. `torpor` is
found on PATH in the venv these tests run from, as the guide's symlink would.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import click
import pytest
from e2e_support import PROJECT, wait_status
from helpers import need, need_root

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "operations.md"
VENV_BIN = Path(sys.executable).parent

# Placeholders of the guide, replaced token by token before parsing.
PLACEHOLDERS = {
    "RUN_ID": "run_0123456789abcdef",
    "ID": "key_0123456789abcdef",
    "KEY_ID": "key_0123456789abcdef",
    "URL": "file:///var/tmp/torpor-doc-store",
    "DEST": "/var/tmp/torpor-doc-dest",
    "KEY_FILE": "/var/tmp/torpor-doc-snapshot-key",
    "tpj_...": "tpj_dummy",
    "tpk_...": "tpk_dummy",
    "s3://BUCKET/PREFIX": "s3://bucket/prefix",
    "./my-project": str(PROJECT),  # deploy's PROJECT_DIR must exist
    "PROJECT_DIR": str(PROJECT),
    "VERB": "trigger",
}
ENV_PREFIXES = ("TORPOR_", "AWS_")


# --- reading the guide ------------------------------------------------------------------------------------------


def _text() -> str:
    return DOC.read_text()


def sh_lines() -> list[str]:
    """Logical lines of the guide's ```sh blocks, in order (continuations joined, indentation removed)."""
    out: list[str] = []
    for block in re.findall(r"^[ \t]*```sh[ \t]*\n(.*?)^[ \t]*```", _text(), re.MULTILINE | re.DOTALL):
        pending = ""
        for raw in block.splitlines():
            line = raw.strip()
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line, pending = pending + line, ""
            if line and not line.startswith("#"):
                out.append(line)
    return out


def doc_line(prefix: str, contains: str = "", *, exact: bool = False) -> str:
    """The one sh-block line that starts with ``prefix`` (and holds ``contains``; is just ``prefix``, if exact)."""
    found = [line for line in sh_lines() if line.startswith(prefix) and contains in line
             and (not exact or line.split("#")[0].strip() == prefix)]
    assert len(found) == 1, f"docs/operations.md: expected one sh line starting with {prefix!r}, found {found}"
    return found[0]


def inline_commands() -> list[str]:
    """`torpor ...` code spans outside the fenced blocks (prose, tables, headings)."""
    prose = re.sub(r"^[ \t]*```.*?^[ \t]*```", "", _text(), flags=re.MULTILINE | re.DOTALL)
    return re.findall(r"`(torpor [^`]+)`", prose)


def _expand(tokens: list[str]) -> list[list[str]]:
    """`keys create|list|revoke` -> three commands (code spans only: in sh, `|` is a pipe)."""
    variants: list[list[str]] = [[]]
    for tok in tokens:
        choices = tok.split("|") if re.fullmatch(r"[\w-]+(\|[\w-]+)+", tok) else [tok]
        variants = [v + [c] for v in variants for c in choices]
    return variants


def _optional_variants(line: str) -> list[str]:
    """`... [--json]` -> the line with and without the optional part."""
    if not re.search(r"\[[^\]]*\]", line):
        return [line]
    return [re.sub(r"\[([^\]]*)\]", r"\1", line), re.sub(r"\s*\[[^\]]*\]", "", line)]


def _substitute(tokens: list[str], env: dict[str, str]) -> list[str]:
    out = []
    for tok in tokens:
        if tok == "...":
            continue
        tok = PLACEHOLDERS.get(tok, tok)
        out.append(re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), f"dummy-{m.group(1)}"), tok))
    return out


# --- parsing with the real CLI, never invoking it -------------------------------------------------------------


def _cli() -> click.Group:
    from torpor.cli import cli

    return cli


def parse(argv: list[str]) -> click.Command:
    """Parse ``torpor ARGV`` as click would, down to the leaf command; no callback runs."""
    cli = _cli()
    ctx = cli.make_context("torpor", list(argv), resilient_parsing=False)
    cmd: click.Command = cli
    while isinstance(cmd, click.Group):
        protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args  # click < 8.2
        rest = [*protected, *ctx.args]
        if not rest:
            break
        name, sub, rest = cmd.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        cmd = sub
        ctx = cmd.make_context(name, rest, parent=ctx, resilient_parsing=False)
    return cmd


def resolve(words: list[str]) -> click.Command:
    """The command that ``torpor WORDS...`` names (stops at the first non-group)."""
    cmd: click.Command = _cli()
    ctx = click.Context(cmd)
    for word in words:
        if not isinstance(cmd, click.Group):
            break
        sub = cmd.get_command(ctx, word)
        assert sub is not None, f"docs/operations.md names `torpor {' '.join(words)}`, but there is no {word!r}"
        cmd = sub
    return cmd


def _option(cmd: click.Command, flag: str) -> click.Parameter | None:
    return next((p for p in cmd.params if flag in p.opts or flag in getattr(p, "secondary_opts", ())), None)


def _envvars(p: click.Parameter) -> list[str]:
    ev = p.envvar
    return [] if ev is None else [ev] if isinstance(ev, str) else list(ev)


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    return {**base, **extra}


def test_every_documented_command_parses():
    """Each `torpor` line of the sh blocks parses in full, in the environment its `export` lines build."""
    env: dict[str, str] = {}
    checked = 0
    for line in sh_lines():
        for variant in _optional_variants(line):
            tokens = shlex.split(variant, comments=True)
            if tokens[:1] == ["sudo"] and tokens[1:2] != ["-u"]:
                tokens = tokens[1:]
            if tokens[:1] == ["export"]:
                env.update(t.split("=", 1) for t in _substitute(tokens[1:], env))  # type: ignore[misc]
                continue
            if tokens[:1] != ["torpor"]:
                continue
            argv = _substitute(tokens[1:], env)
            with mock.patch.dict(os.environ, _clean_env(env), clear=True):
                try:
                    parse(argv)
                except click.UsageError as exc:
                    pytest.fail(f"docs/operations.md: `{line}` does not parse as {argv}: {exc.format_message()}")
            checked += 1
    assert checked >= 15, f"only {checked} torpor commands found in the sh blocks: did the parser break?"


def test_documented_inline_commands_parse():
    """`torpor ...` spans in the prose parse; a required argument the sentence leaves out is allowed."""
    checked = 0
    for span in inline_commands():
        for argv in _expand(_substitute(shlex.split(span)[1:], {})):
            argv = [a for a in argv if a != "--help"]  # `torpor VERB --help`: the verb must exist; print no help
            with mock.patch.dict(os.environ, _clean_env({}), clear=True):
                try:
                    parse(argv)
                except click.MissingParameter:
                    pass  # e.g. "`torpor keys list` shows ids": --db comes from TORPOR_DB
                except click.UsageError as exc:
                    pytest.fail(f"docs/operations.md: `{span}` does not parse as {argv}: {exc.format_message()}")
            checked += 1
    assert checked >= 20


# --- the Configuration reference ------------------------------------------------------------------------------


def _reference() -> list[tuple[str, str]]:
    """(heading, body) of each ### section of "## Configuration reference"."""
    text = _text()
    start = text.index("## Configuration reference")
    end = text.index("\n## ", start + 1)
    parts = re.split(r"^### (.*)$", text[start:end], flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2]))


def _section_commands(heading: str, body: str) -> list[list[str]]:
    spans = re.findall(r"`(torpor [^`]+)`", heading)
    if not spans:  # "Client verbs": the verbs are listed in the sentence before the table
        intro = body.split("\n|", 1)[0] if "\n|" in body else ""
        spans = ["torpor " + s.removeprefix("torpor ") for s in re.findall(r"`([^`]+)`", intro.split("all take")[0])]
    words = []
    for span in spans:
        for expanded in _expand(span.split()[1:]):
            cmd_words = []
            cmd: click.Command = _cli()
            for w in expanded:  # stop at arguments (PROJECT_DIR, agent|coordinator)
                if not isinstance(cmd, click.Group):
                    break
                cmd_words.append(w)
                cmd = resolve(cmd_words)
            if cmd_words not in words:
                words.append(cmd_words)
    return words


def _tables(body: str) -> list[list[dict[str, str]]]:
    tables = []
    for block in re.findall(r"((?:^\|.*\|[ \t]*\n)+)", body, re.MULTILINE):
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in block.splitlines()]
        header, data = rows[0], rows[2:]
        assert all(len(r) == len(header) for r in data), f"docs/operations.md: a table row has a stray `|`: {block}"
        tables.append([dict(zip(header, r)) for r in data])
    return tables


def _has_default(p: click.Parameter) -> bool:
    """A concrete default (click 8.2+ marks "no default" with a Sentinel, older click with None/False)."""
    return p.default is not None and p.default is not False and type(p.default).__name__ != "Sentinel"


def _check_flag(where: str, words: list[str], spec: str, env: str | None, default: str | None) -> None:
    flag, *rest = spec.split()
    name, cmd = " ".join(words), resolve(words)
    p = _option(cmd, flag)
    assert p is not None, f"{where}: `{spec}` is documented, but `torpor {name}` has no {flag} " \
                          f"(it has {sorted(o for q in cmd.params for o in q.opts)})"
    if env is not None:
        documented = re.findall(r"`([A-Z][A-Z0-9_]+)`", env)
        assert documented[:1] == _envvars(p)[:1], \
            f"{where}: {flag} documents env {documented[:1] or 'none'}, the CLI reads {_envvars(p) or 'none'}"
    choices = rest[0].split("|") if rest and "|" in rest[0] else None
    if choices and isinstance(p.type, click.Choice):
        assert sorted(choices) == sorted(map(str, p.type.choices)), f"{where}: {flag} choices {p.type.choices}"
    if default is None:
        return
    default = default.strip()
    if default == "required":
        assert p.required, f"{where}: {flag} is documented as required, the CLI does not require it"
    elif default == "off":
        assert getattr(p, "is_flag", False), f"{where}: {flag} is documented as an off/on flag, it takes a value"
    elif default == "none":
        assert not p.required, f"{where}: {flag} is documented as optional (default none), the CLI requires it"
        assert not _has_default(p), f"{where}: {flag} is documented without default, the CLI's is {p.default!r}"
    elif _has_default(p) and (m := re.fullmatch(r"`([^`]+)`|(\d+(?:\.\d+)?)", default)):
        literal = m.group(1) or m.group(2)
        same = str(p.default) == literal
        if not same and m.group(2):
            same = float(literal) == float(p.default)  # type: ignore[arg-type]
        assert same, f"{where}: {flag} documented default {literal}, the CLI's is {p.default!r}"


def test_configuration_reference_matches_the_cli():
    root = _cli()
    root_opts = {o for p in root.params for o in p.opts}
    assert {"-v", "--version"} <= root_opts, "Global: `torpor -v ...`, `-vv`, `--version`"
    checked = 0
    for heading, body in _reference():
        commands = _section_commands(heading, body)
        if not commands:
            continue  # "S3 and other environment variables": no command, no flags
        tables = [t for t in _tables(body) if t and "flag" in t[0]]
        for words in commands:
            where = f"docs/operations.md, ### {heading.strip()}"
            for table in tables:
                for row in table:
                    if not row["flag"].startswith("`--"):
                        continue
                    spec = re.match(r"`([^`]+)`", row["flag"]).group(1)  # type: ignore[union-attr]
                    _check_flag(where, words, spec, row.get("env"), row.get("default"))
                    checked += 1
            if tables:
                continue
            # Prose sections: "`--db URL` (`TORPOR_DB`, required). `keys create`: `--kind client|agent` (default ...".
            segments = re.split(r"`([a-z][\w -]*)`:", body)
            scoped = [(None, segments[0])] + list(zip(segments[1::2], segments[2::2]))
            for scope, text in scoped:
                if scope is not None and scope.split() != words:
                    continue
                for spec, paren in re.findall(r"`(--[a-z][^`]*)`(?:\s*\(([^)]*)\))?", text):
                    env = paren if re.search(r"`[A-Z][A-Z0-9_]+`", paren) else None
                    default = None
                    if m := re.search(r"default\s+`?([^`),]+)`?", paren):
                        default = f"`{m.group(1).strip()}`"
                    elif "required" in paren:
                        default = "required"
                    _check_flag(where, words, spec, env, default)
                    checked += 1
    assert checked >= 60, f"only {checked} documented flags found: did the parser break?"


# --- run as written -----------------------------------------------------------------------------------------------


def run_doc(line: str, env: dict[str, str], subs: dict[str, str] | None = None, *, check: bool = True,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run one line of the guide in bash, with ``subs`` for its placeholders and hosts (no sudo here: we are root)."""
    for old, new in (subs or {}).items():
        line = line.replace(old, new)
    if line.startswith("sudo ") and not line.startswith("sudo -u"):
        line = line[len("sudo "):]
    proc = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=120, cwd=cwd,
                          check=False)
    if check:
        assert proc.returncode == 0, f"`{line}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def exports(line: str, env: dict[str, str], values: dict[str, str], subs: dict[str, str] | None = None) -> None:
    """Apply an `export A=x B=y` line of the guide to ``env``; ``values`` fills what it leaves as `...`."""
    for old, new in (subs or {}).items():
        line = line.replace(old, new)
    tokens = shlex.split(line, comments=True)
    assert tokens[0] == "export", line
    for tok in tokens[1:]:
        key, value = tok.split("=", 1)
        env[key] = values[key] if "..." in value else value


def base_env() -> dict[str, str]:
    env = _clean_env({})
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    return env


def _checks(out: str) -> dict[str, str]:
    """{check name: mark} from doctor's text output."""
    return {line[6:22].strip().lower(): line[:4].strip() for line in out.splitlines() if line[:4] in ("ok  ", "FAIL", "warn")}


def test_doctor_as_documented(empty_postgres_url, s3_target):
    need_root()
    server = s3_target.server
    env = base_env()
    exports(doc_line("export TORPOR_S3_ENDPOINT=", "omit for AWS S3"), env, {}, {"http://minio:9000": server.endpoint})
    exports(doc_line("export AWS_ACCESS_KEY_ID="), env,
            {"AWS_ACCESS_KEY_ID": server.access_key, "AWS_SECRET_ACCESS_KEY": server.secret_key})
    if server.bucket is not None and server.region:  # an external S3 in another region (the guide's table names it)
        env["TORPOR_S3_REGION"] = server.region
    listed = re.search(r"one line per check \(([^)]*)\)", " ".join(_text().split()))
    assert listed, "docs/operations.md no longer lists doctor's checks"
    documented = [re.sub(r"\s*[≥>].*", "", c).strip().lower() for c in listed.group(1).split(",")]

    plain = run_doc(doc_line("sudo torpor doctor", exact=True), env)
    marks = _checks(plain.stdout)
    assert list(marks) == documented, f"doctor prints {list(marks)}, docs/operations.md lists {documented}"
    assert all(marks[c] in ("ok", "warn") for c in marks), plain.stdout

    env["TORPOR_DB"] = empty_postgres_url  # doctor reads it too: set only now, as the guide's step 2 does
    full = run_doc(doc_line("sudo torpor doctor --db"), env, {"s3://BUCKET/PREFIX": s3_target.url})
    marks = _checks(full.stdout)
    assert list(marks)[:len(documented)] == documented and marks.get("postgres") == "ok" and \
        marks.get("store") == "ok", full.stdout

    # "... and exits 1 if a required one fails": a database nobody listens on.
    from helpers import free_port

    env["TORPOR_DB"] = f"postgresql://torpor@127.0.0.1:{free_port()}/torpor"
    failed = run_doc(doc_line("sudo torpor doctor --db"), env, {"s3://BUCKET/PREFIX": s3_target.url}, check=False)
    assert failed.returncode == 1 and _checks(failed.stdout).get("postgres") == "FAIL", failed.stdout


@pytest.fixture
def torpor_role(postgres_server) -> Iterator[Any]:
    """The role and database the guide creates, removed afterwards (the cluster is this session's own)."""
    import psycopg

    def drop() -> None:
        with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS torpor WITH (FORCE)")
            conn.execute("DROP ROLE IF EXISTS torpor")

    drop()
    try:
        yield postgres_server
    finally:
        drop()


def test_database_schema_and_keys_as_documented(torpor_role):
    need_root()
    import pwd

    import psycopg

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        need(False, "needs the postgres user (apt-get install postgresql)")
    server = torpor_role
    env = base_env()
    # The fixture's cluster listens on 127.0.0.1:PORT, not on Debian's default socket; on a stock
    # host these two variables are not needed. It trusts loopback, so the password is not checked here.
    env |= {"PGHOST": server.host, "PGPORT": str(server.port)}

    # 1. Database (from /, a directory the postgres user may enter).
    run_doc(doc_line("runuser -u postgres -- psql -c"), env, cwd="/")
    run_doc(doc_line("runuser -u postgres -- createdb"), env, cwd="/")

    # 2. Schema and keys.
    exports(doc_line("export TORPOR_DB="), env, {}, {"@db:5432/": f"@{server.host}:{server.port}/"})
    assert env["TORPOR_DB"] == f"postgresql://torpor:change-me@{server.host}:{server.port}/torpor"
    migrated = run_doc(doc_line("torpor migrate"), env)
    assert "schema at version" in migrated.stdout and "(was 0)" in migrated.stdout, migrated.stdout
    client = run_doc(doc_line("torpor keys create --kind client"), env)
    agent = run_doc(doc_line("torpor keys create --kind agent"), env)
    assert client.stdout.startswith("tpk_") and agent.stdout.startswith("tpj_"), (client.stdout, agent.stdout)
    client_id = re.search(r"\(client key (\S+);", client.stderr).group(1)  # type: ignore[union-attr]
    agent_id = re.search(r"\(agent key (\S+);", agent.stderr).group(1)  # type: ignore[union-attr]
    with psycopg.connect(env["TORPOR_DB"]) as conn:  # the schema belongs to the torpor role
        assert conn.execute("select current_user").fetchone()[0] == "torpor"  # type: ignore[index]

    # "`torpor keys list` shows ids, `torpor keys revoke ID` revokes one".
    assert "`torpor keys list` shows ids" in " ".join(_text().split())
    assert "torpor keys revoke ID" in inline_commands()
    listing = run_doc("torpor keys list", env).stdout
    rows = {line.split()[0]: line.split() for line in listing.splitlines()}
    assert rows[client_id][1:3] == ["client", "active"] and rows[agent_id][1:3] == ["agent", "active"], listing
    assert "tpk_" not in listing and "tpj_" not in listing  # never the secrets
    revoked = run_doc("torpor keys revoke ID", env, {"ID": client_id})
    assert revoked.stdout.strip() == f"revoked {client_id}"
    keys = {k["id"]: k for k in json.loads(run_doc("torpor keys list --json", env).stdout)}
    assert keys[client_id]["revoked"] and not keys[agent_id]["revoked"], keys
    assert (keys[client_id]["kind"], keys[client_id]["name"]) == ("client", "ops")
    assert (keys[agent_id]["kind"], keys[agent_id]["name"]) == ("agent", "workers")
    again = run_doc("torpor keys revoke ID", env, {"ID": client_id}, check=False)
    assert again.returncode == 1 and "no active key" in again.stderr


def test_install_service_as_documented(tmp_path):
    # The guide runs it as root (into /etc); into tmp_path it needs no root, so this runs anywhere.
    env = base_env()
    # A stand-in systemctl first on PATH: on a host where systemd runs, the daemon-reload the guide
    # mentions is recorded here instead of reloading the real one.
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/systemctl.calls\n')
    (stub / "systemctl").chmod(0o755)
    env["PATH"] = f"{stub}:{env['PATH']}"
    torpor_bin = str((VENV_BIN / "torpor").resolve())
    text = " ".join(_text().split())

    units = {}
    for kind in ("coordinator", "agent"):
        line = doc_line(f"sudo torpor install-service {kind}")
        assert line.split("#")[0].split() == ["sudo", "torpor", "install-service", kind]
        units[kind] = run_doc(line.split("#")[0].strip() + " --print", env).stdout
        assert f"ExecStart={torpor_bin} " in units[kind], units[kind]  # "pointing at the torpor that ran it"
    coord, agent = units["coordinator"], units["agent"]
    # What the systemd section says of the units.
    assert "`torpor-coordinator.service`, `Type=simple`" in text and "Type=simple" in coord
    assert "DynamicUser=yes" in coord and "ProtectSystem=strict" in coord
    assert "LoadCredential=api-keys:/etc/torpor/api-keys" in coord
    assert "LoadCredential=join-tokens:/etc/torpor/join-tokens" in coord
    assert "Environment=TORPOR_LISTEN=0.0.0.0:7433" in coord and "the unit's default is `0.0.0.0:7433`" in text
    assert "`Type=notify`" in text and "Type=notify" in agent and "TimeoutStartSec=120" in agent
    assert "KillMode=process" in agent and "--join-token-file /etc/torpor/join-token" in agent
    assert f"ExecStart={torpor_bin} agent --state-dir /var/lib/torpor/agent " in agent
    for unit in units.values():
        assert "Restart=on-failure" in unit and "RestartSec=2" in unit  # "restart on failure after 2 s"

    unit_dir, config_dir = tmp_path / "systemd", tmp_path / "etc-torpor"
    for kind in ("coordinator", "agent"):
        out = run_doc(f"torpor install-service {kind} --unit-dir {unit_dir} --config-dir {config_dir}", env).stdout
        assert (unit_dir / f"torpor-{kind}.service").read_text() == units[kind]
        env_file = config_dir / f"{kind}.env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600 and env_file.read_text().startswith("#")
        assert stat.S_IMODE(config_dir.stat().st_mode) == 0o750
        secrets = ["join-token"] if kind == "agent" else ["api-keys", "join-tokens"]
        assert all(str(config_dir / s) in out for s in secrets), out  # it says which files to create
    # "never overwritten"
    (config_dir / "agent.env").write_text("TORPOR_SLOTS=8\n")
    run_doc(f"torpor install-service agent --unit-dir {unit_dir} --config-dir {config_dir}", env)
    assert (config_dir / "agent.env").read_text() == "TORPOR_SLOTS=8\n"
    calls = tmp_path / "systemctl.calls"
    if Path("/run/systemd/system").is_dir():
        assert calls.read_text().split("\n")[0] == "daemon-reload"
    else:
        assert not calls.exists()


def test_inspecting_snapshots_as_documented(stack, tmp_path):
    env = base_env()
    store = f"file://{stack.dir}/store"  # torpor dev's default store, the one its agents use
    run_id = stack.cli_json("trigger", "big-state", "--payload", json.dumps({"mb": 5, "seconds": 30}))
    run_id = run_id.get("run_id") or run_id["id"]
    try:
        run = wait_status(stack, run_id, {"SUSPENDED"}, timeout=60)
        latest = run["checkpoints"][-1]
        list_line, fetch_line = doc_line("torpor snapshots list"), doc_line("torpor snapshots fetch")
        # torpor dev's coordinator seals snapshots under the key it keeps in DATA_DIR/secrets (operations.md)
        subs = {"RUN_ID": run_id, "URL": store, "KEY_FILE": str(stack.dir / "secrets" / "snapshot-key")}

        human = run_doc(_optional_variants(list_line)[1], env, subs).stdout
        listed = json.loads(run_doc(_optional_variants(list_line)[0], env, subs).stdout)
        assert listed and listed[-1]["id"] in latest["location"], (listed, latest)
        assert all(i["id"] in human for i in listed), human
        assert listed[-1]["stored_bytes"] > 0 and listed[-1]["raw_bytes"] >= 5 << 20
        assert listed[-1]["key_id"].startswith("kek-") and listed[-1]["key_id"] in human
        counted = json.loads(run_doc(_optional_variants(doc_line("torpor snapshots keys"))[0], env, subs).stdout)
        assert counted.get(listed[-1]["key_id"], 0) >= 1, counted

        dest = tmp_path / "image"
        out = run_doc(_optional_variants(fetch_line)[1], env, {**subs, "DEST": str(dest)}).stdout
        assert "verified against" in out, out
        names = {p.name for p in dest.iterdir()}
        assert "core-1.img" in names, names  # the guide's `crit show DEST/core-1.img`
        assert any(re.fullmatch(r"pages-\d+\.img", n) for n in names), names
        chosen = tmp_path / "chosen"
        run_doc(_optional_variants(fetch_line)[0], env,
                {**subs, "DEST": str(chosen), "--checkpoint ID": f"--checkpoint {listed[0]['id']}"})
        assert "core-1.img" in {p.name for p in chosen.iterdir()}

        # "A snapshot that does not match is refused and nothing is left in DEST."
        manifest = json.loads((stack.dir / "store" / listed[-1]["manifest"]).read_text())
        archive = stack.dir / "store" / manifest["archive_key"]
        data = bytearray(archive.read_bytes())
        data[len(data) // 2] ^= 0xFF
        archive.write_bytes(bytes(data))
        bad = tmp_path / "bad"
        refused = run_doc(_optional_variants(fetch_line)[1], env, {**subs, "DEST": str(bad)}, check=False)
        assert refused.returncode == 1 and "corrupt" in refused.stderr, refused.stderr
        assert not bad.exists()
        # "Without the right key, fetch says which key the checkpoint needs."
        keyless = _optional_variants(fetch_line)[1].replace(" --key-file KEY_FILE", "")
        told = run_doc(keyless, env, {**subs, "DEST": str(bad)}, check=False)
        assert told.returncode == 1 and f"encrypted with snapshot key {listed[-1]['key_id']}" in told.stderr, told.stderr
    finally:
        stack.cli("runs", "cancel", run_id, check=False)
