"""Test side of the subprocess copy tests: databases, worker processes, table state.

Each ``Pair`` owns a fresh directory of SQLite files and, for PostgreSQL
aliases, databases named ``syncrouter_copy_<random>_<alias>`` that it creates
and drops itself, so parallel runs never meet. State is read with sqlite3 and
psycopg directly: the test process's Django settings know none of these names.
"""
from __future__ import annotations

import collections
import os
import queue
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.support import pg

ROOT = Path(__file__).resolve().parents[2]
OUTGOING = "syncrouter_outgoingtransaction"
INCOMING = "syncrouter_incomingtransaction"


def _pg_connect(dbname: str):
    config = pg.settings_for(dbname)
    return psycopg.connect(dbname=dbname, user=config["USER"], password=config["PASSWORD"],
                           host=config["HOST"], port=config["PORT"], autocommit=True)


@dataclass
class Pair:
    source: str
    target: str
    directory: Path
    pg_names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, source: str, target: str, directory: Path) -> Pair:
        token = secrets.token_hex(4)
        names = {alias: f"syncrouter_copy_{token}_{alias}"
                 for alias in (source, target) if alias.startswith("pg")}
        with _pg_connect("postgres") if names else _Nothing() as conn:
            for name in names.values():
                conn.execute(f'CREATE DATABASE "{name}"')
        return cls(source, target, directory, names)

    def drop(self) -> None:
        if self.pg_names:
            with _pg_connect("postgres") as conn:
                for name in self.pg_names.values():
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def argv(self, *command: str, ports: dict[str, int] | None = None) -> list[str]:
        argv = [sys.executable, "-m", "tests.support.copyworker", "--source", self.source,
                "--target", self.target]
        for alias, name in self.pg_names.items():
            argv += ["--db", f"{alias}={name}"]
        for alias, port in (ports or {}).items():
            argv += ["--port", f"{alias}={port}"]
        return argv + list(command)

    def env(self) -> dict[str, str]:
        return {**os.environ, "SYNCROUTER_TEST_DIR": str(self.directory),
                "PYTHONPATH": str(ROOT)}

    def prepare(self, rows: int) -> None:
        subprocess.run(self.argv("prepare", "--rows", str(rows)), env=self.env(), cwd=ROOT,
                       check=True, timeout=120)

    def start(self, *command: str, ports: dict[str, int] | None = None) -> Worker:
        return Worker(subprocess.Popen(
            self.argv(*command, ports=ports), env=self.env(), cwd=ROOT, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE))

    def query(self, alias: str, sql: str) -> list[tuple]:
        if alias in self.pg_names:
            with _pg_connect(self.pg_names[alias]) as conn:
                return conn.execute(sql).fetchall()
        conn = sqlite3.connect(self.directory / f"{alias}.sqlite3")
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def ids(self, alias: str, table: str, where: str = "") -> set[uuid.UUID]:
        sql = f"SELECT id FROM {table}" + (f" WHERE {where}" if where else "")
        return {_uuid(id_) for id_, in self.query(alias, sql)}

    def count(self, alias: str, table: str) -> int:
        return self.query(alias, f"SELECT count(*) FROM {table}")[0][0]

    def groups(self) -> list[set[uuid.UUID]]:
        """The source's transactions by client database transaction, as sets of ids."""
        groups = collections.defaultdict(set)
        for id_, db_txid in self.query(self.source,
                                       f"SELECT id, db_transaction_id FROM {OUTGOING}"):
            groups[db_txid].add(_uuid(id_))
        return list(groups.values())

    def state(self) -> State:
        return State(source=self.ids(self.source, OUTGOING),
                     marked=self.ids(self.source, OUTGOING, "is_consumed_server"),
                     target=self.ids(self.target, INCOMING),
                     target_rows=self.count(self.target, INCOMING),
                     groups=self.groups())


def _uuid(value) -> uuid.UUID:
    """psycopg returns UUIDs, sqlite3 the 32 hex digits Django stores."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


@dataclass
class State:
    source: set
    marked: set
    target: set
    target_rows: int
    groups: list[set]

    def check(self, batch_size: int) -> None:
        """What must hold after any crash: nothing marked that the target lacks, no extras,
        and each client database transaction wholly there or wholly absent."""
        assert self.marked <= self.target, f"{len(self.marked - self.target)} marked, not copied"
        assert self.target <= self.source, "target holds rows the source never had"
        assert self.target_rows == len(self.target), "target holds a transaction twice"
        # A batch runs on past its size to the end of the group of its last row.
        largest = batch_size - 1 + max(map(len, self.groups))
        assert len(self.target - self.marked) <= largest, "more than one batch unmarked"
        for side, ids in (("target", self.target), ("source marks", self.marked)):
            split = [group for group in self.groups if group & ids and not group <= ids]
            assert not split, (f"{side}: {len(split)} client database transaction(s) only "
                               f"partly there, e.g. {len(split[0] & ids)} of {len(split[0])} rows")

    @property
    def in_window(self) -> bool:
        """A batch is committed on the target and not yet marked on the source."""
        return bool(self.target - self.marked)


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


class Worker:
    """A running tests.support.copyworker process whose output lines arrive on a queue."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._ended = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def wait_for(self, prefix: str, nth: int = 1, timeout: float = 60) -> str | None:
        """The ``nth`` line starting with ``prefix``; None if the process ended first."""
        found = 0
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                self.kill()
                raise AssertionError(
                    f"worker silent for {timeout}s; last lines {self.seen[-3:]}") from None
            if line is None:
                self._ended = True
                return None
            self.seen.append(line)
            if line.split()[0] == prefix:
                found += 1
                if found == nth:
                    return line

    def kill(self) -> bool:
        """SIGKILL; True if that is what ended the process. Collects its remaining output."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        return self.finish() == -signal.SIGKILL

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def finish(self, timeout: float = 120) -> int:
        self.process.wait(timeout)
        self._reader.join(timeout)
        while not self._ended:
            line = self.lines.get()
            if line is None:
                self._ended = True
            else:
                self.seen.append(line)
        self.stderr = self.process.stderr.read()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            stream.close()
        return self.process.returncode

    @property
    def last(self) -> str:
        return self.seen[-1] if self.seen else "(nothing)"
