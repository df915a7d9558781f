"""A private, throw-away PostgreSQL server for tests (and for trying multi-worker sweeps on
one machine): ``initdb`` + ``pg_ctl`` from the Debian ``postgresql`` package in a temporary
directory, listening only on a unix socket inside that directory (no TCP port, so it never
collides with another server), trust authentication, fsync off.

PostgreSQL refuses to run as root; when we are root the server runs as the ``postgres``
user the Debian package creates (``runuser -u postgres``), in a directory it owns.

    python tests/pg_server.py          # start one, print its URL, stop it on Ctrl-C
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

DB_USER = "l3dg"
DB_NAME = "l3dg"


class PostgresUnavailable(RuntimeError):
    """The server cannot be installed or started here; the message says why."""


def postgres_bin() -> Path:
    """Directory of the newest installed PostgreSQL server binaries (initdb, pg_ctl)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb) under /usr/lib/postgresql/*/bin "
                              "or on PATH: install the Debian package with "
                              "`apt-get update && apt-get install -y postgresql`")


class PostgresServer:
    """``with PostgresServer() as pg: pg.url`` -> ``postgresql+psycopg://l3dg@/l3dg?host=<socket dir>``.

    ``stop()`` (also on exit of the ``with`` block) shuts the server down immediately and
    deletes its directory.
    """

    def __init__(self, start_timeout_s: float = 60.0):
        self.bin = postgres_bin()
        self.start_timeout_s = start_timeout_s
        self.run_as: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no 'postgres' user to run "
                                          "the server as (the Debian postgresql package creates it)")
            self.run_as = "postgres"
        self.root: Path | None = None

    # paths -------------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    @property
    def url(self) -> str:
        """SQLAlchemy / Optuna storage URL over the unix socket; the driver (psycopg 3) is
        named so the URL means the same under SQLAlchemy 2.0 (default psycopg2) and 2.1."""
        return self.database_url(DB_NAME)

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg://{DB_USER}@/{name}?host={self.socket_dir}"

    def create_database(self, name: str) -> str:
        """A fresh, empty database on this server (its storage URL)."""
        self._cmd(self.bin / "createdb", "-h", self.socket_dir, "-U", DB_USER, name)
        return self.database_url(name)

    # lifecycle ---------------------------------------------------------------------------
    def _cmd(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in argv]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             env=dict(os.environ, LC_ALL="C"))
        if out.returncode != 0:
            log = ""
            if self.root and (self.root / "server.log").exists():
                log = (self.root / "server.log").read_text()[-2000:]
            raise PostgresUnavailable(f"`{' '.join(cmd)}` failed ({out.returncode}): "
                                      f"{(out.stderr or out.stdout)[-2000:]}{log}")
        return out

    def start(self) -> "PostgresServer":
        # a fresh directory under /tmp (the server user cannot enter pytest's root-only tmp
        # dirs); short, because a unix socket path is limited to ~107 characters
        self.root = Path(tempfile.mkdtemp(prefix="l3dg-pg-"))
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        try:
            self._cmd(self.bin / "initdb", "-D", self.data_dir, "--auth=trust", f"--username={DB_USER}",
                      "--encoding=UTF8", "--no-sync", "--no-instructions")
            opts = f"-k {self.socket_dir} -c listen_addresses='' -F -c max_connections=50"
            self._cmd(self.bin / "pg_ctl", "-D", self.data_dir, "-l", self.root / "server.log",
                      "-o", opts, "-w", "-t", str(int(self.start_timeout_s)), "start",
                      timeout=self.start_timeout_s + 10)
            self._cmd(self.bin / "createdb", "-h", self.socket_dir, "-U", DB_USER, DB_NAME)
        except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as err:
            self.stop()
            if isinstance(err, PostgresUnavailable):
                raise
            raise PostgresUnavailable(f"starting PostgreSQL failed: {err}") from err
        return self

    def stop(self) -> None:
        if self.root is None:
            return
        if (self.data_dir / "postmaster.pid").exists():
            try:
                self._cmd(self.bin / "pg_ctl", "-D", self.data_dir, "-m", "immediate", "-w", "stop",
                          timeout=60)
            except (PostgresUnavailable, subprocess.TimeoutExpired):
                pass  # best effort: the directory is removed below either way
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    with PostgresServer() as pg:
        print(pg.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
