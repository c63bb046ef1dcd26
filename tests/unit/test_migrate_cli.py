"""`wai migrate`: the shared database's schema brought up to date once, as a deployment's init container
runs it, against a real Postgres (tests/conftest.py's, or a private one that starts late)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

from server.stores.postgres import migrations
from tests.support.ports import free_port
from tests.support.stores import PostgresServer, postgres_server, until_refused

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/default.yaml"


def wai_migrate(database_url: str | None, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "migrate", "--config", CONFIG, *options],
        cwd=ROOT,
        env=environment(database_url),
        capture_output=True,
        text=True,
        timeout=120,
    )


def environment(database_url: str | None) -> dict[str, str]:
    """The test run's environment without its WAI_* settings, and the database as a deployment gives it."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("WAI_")}
    if database_url:
        env["WAI_DATABASE_URL"] = database_url
    return env


def recorded(database_url: str) -> list[tuple[int, str]]:
    with psycopg.connect(database_url) as connection:
        return connection.execute("SELECT version, name FROM wai_schema_migrations ORDER BY version").fetchall()


def test_the_first_run_applies_every_migration_and_the_second_none(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    names = [m.name for m in migrations()]
    assert names[:3] == ["0001_batch.sql", "0002_finetunes.sql", "0003_responses.sql"]

    first = wai_migrate(url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"applied {name}" for name in names]
    assert recorded(url) == [(m.version, m.name) for m in migrations()]

    second = wai_migrate(url)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [f"the schema is current ({len(names)} migrations)"]
    assert recorded(url) == [(m.version, m.name) for m in migrations()]


def test_a_database_migrated_by_a_newer_wai_is_refused(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    assert wai_migrate(url).returncode == 0
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("INSERT INTO wai_schema_migrations (version, name) VALUES (9999, '9999_later.sql')")

    refused = wai_migrate(url)
    assert refused.returncode == 1
    assert "[9999]" in refused.stderr and "a newer wai migrated it" in refused.stderr
    assert (9999, "9999_later.sql") in recorded(url)


def test_an_unreachable_database_exits_1_without_its_password() -> None:
    url = f"postgresql://wai:hunter2@127.0.0.1:{free_port()}/wai"
    failed = wai_migrate(url)
    assert failed.returncode == 1
    assert "wai migrate: the database is unreachable" in failed.stderr
    assert "hunter2" not in failed.stderr + failed.stdout


def test_no_database_url_exits_2() -> None:
    failed = wai_migrate(None)
    assert failed.returncode == 2
    assert "sets no database_url" in failed.stderr


def test_wait_retries_until_the_database_starts() -> None:
    with postgres_server() as server:
        url = server.new_database()
        server.stop()
        until_refused(url)
        command = [sys.executable, "-m", "server.cli", "migrate", "--config", CONFIG, "--wait", "120"]
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert process.stderr is not None
            seen = []
            for line in process.stderr:  # the first failed attempt, before the server is back
                seen.append(line)
                if "trying again" in line:
                    break
            assert "trying again" in "".join(seen), "".join(seen)
            server.start()
            stdout, stderr = process.communicate(timeout=150)
        finally:
            process.kill()
        assert process.returncode == 0, stderr
        assert stdout.splitlines() == [f"applied {m.name}" for m in migrations()]
        assert recorded(url) == [(m.version, m.name) for m in migrations()]
