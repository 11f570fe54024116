"""The Prefect server's database: SQLite by default (under PREFECT_HOME), PostgreSQL for many
workers. This module starts a local PostgreSQL (Debian's ``postgresql`` package) for the
server and checks a database URL before the server starts on it.

    python -m smartaug.flows.database start --data DIR --port PORT   # prints the connection URL
    python -m smartaug.flows.database stop --data DIR
    python -m smartaug.flows.database check [URL]                    # default: the URL Prefect uses

``make serve-pg`` runs ``start`` (data in ``.prefect/postgres``, port ``PG_PORT``, 5433 by
default) and then the server and the deployments with ``PREFECT_API_DATABASE_CONNECTION_URL``
set to it. A URL of your own PostgreSQL works the same way: export
``PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB`` and run
``make up``; ``check`` runs first and says what is wrong (host not reachable, password refused,
no such database) before any server starts.

PostgreSQL refuses to run as root: as root, its programs run as the ``postgres`` user the
package creates, and the data directory is owned by it.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["DatabaseError", "check_database", "pg_bin", "pg_program", "start_postgres", "stop_postgres"]

USER = DATABASE = "prefect"


class DatabaseError(RuntimeError):
    """The database cannot be used; the message says why and how to fix it."""


def pg_bin() -> Path:
    """The directory of PostgreSQL's server programs (initdb, pg_ctl)."""
    for name in ("initdb", "pg_ctl"):
        found = shutil.which(name)
        if found:
            return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit()
                        else 0)
    if candidates:
        return Path(candidates[-1]).parent
    raise DatabaseError("PostgreSQL's server programs (initdb, pg_ctl) are not installed: "
                        "apt-get install postgresql (make serve-pg does this as root), or point "
                        "PREFECT_API_DATABASE_CONNECTION_URL at a running PostgreSQL")


def pg_program(name: str) -> str:
    """A PostgreSQL program (psql, createdb, ...): beside initdb, else on the PATH."""
    path = pg_bin() / name
    return str(path) if path.exists() else shutil.which(name) or name


def _as_owner(cmd: list[str]) -> list[str]:
    """``cmd`` as the ``postgres`` user when this process is root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def _run(cmd: list[str], what: str) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise DatabaseError(f"{what} failed (exit {res.returncode}): "
                            f"{(res.stderr or res.stdout).strip()[-1500:]}")
    return res.stdout


def url_for(port: int, host: str = "127.0.0.1") -> str:
    return f"postgresql+asyncpg://{USER}@{host}:{port}/{DATABASE}"


def start_postgres(data: str | os.PathLike, port: int) -> str:
    """Start (initialising on first use) a PostgreSQL cluster in ``data`` on 127.0.0.1:``port``
    with a database ``prefect`` owned by the role ``prefect`` (trust authentication on the
    loopback interface only); returns the connection URL for Prefect. Already running: the
    URL, nothing restarted."""
    bindir = pg_bin()
    data = Path(data).absolute()
    url = url_for(port)
    if (data / "postmaster.pid").exists() and _status(bindir, data):
        return url
    root = os.geteuid() == 0
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if root:
            pw = pwd.getpwnam("postgres")
            os.chown(data, pw.pw_uid, pw.pw_gid)
            os.chmod(data, 0o700)
            for parent in data.parents:  # the postgres user must reach its directory
                if parent.stat().st_uid == 0 and not parent.stat().st_mode & 0o001:
                    raise DatabaseError(
                        f"{parent} is not searchable by other users, so the postgres user "
                        f"cannot reach {data}: put the data directory elsewhere (--data)")
        _run(_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", USER, "-A", "trust",
                        "-E", "UTF8"]), "initdb")
    log = data / "server.log"
    _run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                    "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"]),
         f"starting PostgreSQL on 127.0.0.1:{port} (log: {log})")
    exists = _run([pg_program("psql"),
                   "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-d", "postgres", "-tAc",
                   f"select 1 from pg_database where datname = '{DATABASE}'"], "psql")
    if exists.strip() != "1":
        _run([pg_program("createdb"),
              "-h", "127.0.0.1", "-p", str(port), "-U", USER, DATABASE], "createdb")
    check_database(url)
    return url


def _status(bindir: Path, data: Path) -> bool:
    res = subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "status"]),
                         capture_output=True, text=True, timeout=60)
    return res.returncode == 0


def stop_postgres(data: str | os.PathLike) -> bool:
    """Stop the cluster in ``data`` (fast shutdown); False when it was not running."""
    data = Path(data).absolute()
    if not (data / "postmaster.pid").exists():
        return False
    bindir = pg_bin()
    if not _status(bindir, data):
        return False
    _run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
         "stopping PostgreSQL")
    return True


def check_database(url: str | None = None, timeout: float = 5.0) -> str:
    """Connect to the database at ``url`` (default: the one Prefect's server would use) and
    return a one-line description; ``DatabaseError`` saying what is wrong and how to fix it
    when it cannot be used. Nothing is written."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if url is None:
        from prefect.settings import get_current_settings

        url = get_current_settings().server.database.connection_url.get_secret_value()
    fix = ("fix PREFECT_API_DATABASE_CONNECTION_URL (postgresql+asyncpg://USER:PASSWORD@HOST:"
           "PORT/DB), or start a local PostgreSQL with make serve-pg")
    try:
        u = make_url(url)
    except ArgumentError as e:
        raise DatabaseError(f"{url!r} is not a database URL ({e}); {fix}") from None
    shown = u.render_as_string(hide_password=True)
    if u.drivername.startswith("sqlite"):
        path = Path(u.database or "")
        if u.database and not path.parent.is_dir():
            raise DatabaseError(f"the SQLite database {path}: directory {path.parent} does not "
                                f"exist; create it or {fix}")
        return f"SQLite at {path}"
    if u.drivername != "postgresql+asyncpg":
        raise DatabaseError(f"{shown}: Prefect's server needs sqlite+aiosqlite or "
                            f"postgresql+asyncpg, got {u.drivername}; {fix}")
    import asyncpg

    async def probe():
        conn = await asyncpg.connect(host=u.host or "127.0.0.1", port=u.port or 5432,
                                     user=u.username, password=u.password,
                                     database=u.database, timeout=timeout)
        try:
            return await conn.fetchval("show server_version")
        finally:
            await conn.close()

    where = f"{u.host or '127.0.0.1'}:{u.port or 5432}"
    try:
        version = asyncio.run(asyncio.wait_for(probe(), timeout + 1))
    except (OSError, TimeoutError) as e:
        raise DatabaseError(f"cannot reach PostgreSQL at {where} ({shown}): "
                            f"{type(e).__name__}: {e or 'no answer'}; is it running and "
                            f"listening there? {fix}") from None
    except asyncpg.InvalidPasswordError:
        raise DatabaseError(f"PostgreSQL at {where} refused the password of user "
                            f"{u.username!r}; {fix}") from None
    except asyncpg.InvalidCatalogNameError:
        raise DatabaseError(f"PostgreSQL at {where} has no database {u.database!r}: create it "
                            f"(createdb -h {u.host} -p {u.port} -U {u.username} {u.database}) "
                            f"or {fix}") from None
    except asyncpg.PostgresError as e:
        raise DatabaseError(f"PostgreSQL at {where} refused the connection: {e}; "
                            f"{fix}") from None
    return f"PostgreSQL {version} at {where}, database {u.database}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m smartaug.flows.database",
                                 description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start a local PostgreSQL; prints the connection URL")
    s.add_argument("--data", required=True)
    s.add_argument("--port", type=int, default=5433)
    t = sub.add_parser("stop", help="stop it")
    t.add_argument("--data", required=True)
    c = sub.add_parser("check", help="connect to a database URL (default: Prefect's)")
    c.add_argument("url", nargs="?")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "start":
            print(start_postgres(args.data, args.port))
        elif args.cmd == "stop":
            print("stopped PostgreSQL" if stop_postgres(args.data) else "PostgreSQL was not "
                  "running", file=sys.stderr)
        else:
            print(check_database(args.url), file=sys.stderr)
    except DatabaseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
