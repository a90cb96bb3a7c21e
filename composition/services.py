"""Private PostgreSQL and Mosquitto instances on free local ports, for tests and the demo.

They never touch a server already running on the machine: each instance lives in
its own folder, listens on 127.0.0.1 on a port picked free, and can be stopped
and started again on the same port (the chaos tests rely on that).
PostgreSQL refuses to run as root, so as root the cluster runs as `postgres`.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from parceltrack.errors import ServiceError

log = logging.getLogger(__name__)

PG_USER = "postgres"


def end_process(
    proc: subprocess.Popen[bytes] | None, timeout: float, sig: int = signal.SIGTERM
) -> None:
    """Send `sig` to a running process, wait up to `timeout` s, then SIGKILL it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise ServiceError(f"nothing answered on 127.0.0.1:{port} within {timeout:.0f}s")


def postgres_bindir() -> Path:
    """Where initdb and pg_ctl live (Debian keeps them off the PATH)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    for found in (shutil.which("pg_ctl"), *reversed(candidates)):
        if found and Path(found).exists():
            path = Path(found)
            return path.parent if path.name == "pg_ctl" else path
    raise ServiceError(
        "PostgreSQL server binaries not found: install them with "
        "'sudo apt-get install postgresql' (15 or newer)"
    )


def postgres_libdir(bindir: Path) -> Path:
    """The server's library folder (`pg_config --pkglibdir`) for the binaries in `bindir`."""
    # pg_ctl may be a link on the PATH (/usr/local/bin) to the real bindir.
    bindir = (bindir / "pg_ctl").resolve().parent
    pg_config = bindir / "pg_config"
    if pg_config.exists():
        result = subprocess.run(
            [str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            return Path(result.stdout.strip())
    return bindir.parent / "lib"  # Debian's layout: /usr/lib/postgresql/<version>/{bin,lib}


def has_timescale_library(libdir: Path) -> bool:
    """True when TimescaleDB's library is installed in `libdir` (the loader
    `timescaledb.so`, or a versioned `timescaledb-<version>.so`)."""
    return (libdir / "timescaledb.so").exists() or any(libdir.glob("timescaledb-*.so"))


def instance_settings(fast: bool, libdir: Path) -> list[str]:
    """postgresql.conf lines of a private instance whose server libraries are in `libdir`."""
    settings = [
        "listen_addresses = '127.0.0.1'",
        # TCP only: a socket path under a deep checkout can exceed the 107-byte limit.
        "unix_socket_directories = ''",
        "max_connections = 200",
        "shared_buffers = 256MB",
        "max_wal_size = 2GB",
        "logging_collector = off",
    ]
    if fast:
        settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
    if has_timescale_library(libdir):
        # Installed but not preloaded, the server lists the extension yet refuses to
        # create it; preloaded, the demo and the tests run on TimescaleDB.
        settings.append("shared_preload_libraries = 'timescaledb'")
    return settings


def _running_as_root() -> bool:
    return os.geteuid() == 0


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster in `root`, listening on 127.0.0.1:`port`."""

    root: Path
    port: int = field(default_factory=free_port)
    fast: bool = True  # tests trade crash durability of the OS for speed; the demo does not
    bindir: Path = field(default_factory=postgres_bindir)
    _outside: Path | None = None  # data folder in /tmp when `root` is out of postgres' reach

    def __post_init__(self) -> None:
        self.root = self.root.absolute()

    @property
    def data(self) -> Path:
        return self.root / "pgdata"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        tool = self.bindir / args[0]
        if not tool.exists():  # bindir is the PATH's folder of links to pg_ctl and initdb
            tool = (self.bindir / "pg_ctl").resolve().parent / args[0]
        cmd = [str(tool), *args[1:]]
        if _running_as_root():
            cmd = ["runuser", "-u", PG_USER, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(f"{args[0]} failed: {result.stderr.strip() or result.stdout}")
        return result

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not _running_as_root():
            return
        # The postgres user must be able to reach the folder; a project checked out
        # under /root is not reachable, so the data then lives in /tmp, linked here.
        probe = subprocess.run(
            ["runuser", "-u", PG_USER, "--", "test", "-w", str(self.root)], check=False
        )
        if probe.returncode != 0:
            shutil.chown(self.root, user=PG_USER)
            probe = subprocess.run(
                ["runuser", "-u", PG_USER, "--", "test", "-w", str(self.root)], check=False
            )
        if probe.returncode != 0:
            outside = Path(tempfile.mkdtemp(prefix="parceltrack-pg-"))
            shutil.chown(outside, user=PG_USER)
            self.root.joinpath("pgdata").unlink(missing_ok=True)
            self.root.joinpath("pgdata").symlink_to(outside / "pgdata")
            self._outside = outside

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self._prepare_root()
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            PG_USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C",
        )
        settings = instance_settings(self.fast, postgres_libdir(self.bindir))
        conf = self.data / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write("\n# parceltrack private instance\n" + "\n".join(settings) + "\n")

    def start(self) -> None:
        self.init()
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.data / "server.log"),
            "-o",
            f"-p {self.port}",
            "-w",
            "-t",
            "60",
            "start",
        )
        wait_for_port(self.port)

    def replica(self, root: Path) -> PrivatePostgres:
        """A streaming replica of this running cluster in `root` (not started yet).

        `pg_basebackup -R` copies the cluster and writes the standby settings
        (standby.signal, primary_conninfo), as an operator sets one up; initdb's
        trust rules already admit replication connections from 127.0.0.1.
        """
        standby = PrivatePostgres(root, fast=self.fast, bindir=self.bindir)
        standby._prepare_root()
        self._run(
            "pg_basebackup",
            "-D",
            str(standby.data),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            PG_USER,
            "-X",
            "stream",
            "-R",
            "--no-sync",
        )
        return standby

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(ServiceError):
                self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        self.stop("immediate")
        if self._outside is not None:
            shutil.rmtree(self._outside, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """The files of a TLS listener: the CA clients verify against, the broker's own pair."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_broker_certificates(folder: Path) -> BrokerTls:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost it signed,
    made with the `openssl` command (valid for two days)."""
    if shutil.which("openssl") is None:
        raise ServiceError("openssl not found: install it with 'sudo apt-get install openssl'")
    folder.mkdir(parents=True, exist_ok=True)
    tls = BrokerTls(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    ca_key, csr, ext = folder / "ca.key", folder / "server.csr", folder / "server.ext"
    ext.write_text(
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
    )
    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for command in (
        ("req", "-x509", *key, "-keyout", str(ca_key), "-out", str(tls.ca_file), "-days", "2",
         "-subj", "/CN=parceltrack private test CA",
         "-addext", "basicConstraints = critical, CA:TRUE",
         "-addext", "keyUsage = critical, keyCertSign, cRLSign"),
        ("req", *key, "-keyout", str(tls.key_file), "-out", str(csr), "-subj", "/CN=127.0.0.1"),
        ("x509", "-req", "-in", str(csr), "-CA", str(tls.ca_file), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(tls.cert_file), "-days", "2", "-extfile", str(ext)),
    ):  # fmt: skip
        done = subprocess.run(["openssl", *command], capture_output=True, text=True)
        if done.returncode != 0:
            raise ServiceError(f"openssl {command[0]} failed: {done.stderr.strip()}")
    return tls


@dataclass
class PrivateMosquitto:
    """A Mosquitto broker in `root`, listening on 127.0.0.1:`port`, with persistence.

    With `tls`, that one listener speaks only TLS (mqtts://), as a production broker
    that refuses plain connections does.
    """

    root: Path
    port: int = field(default_factory=free_port)
    extra_conf: str = ""
    tls: BrokerTls | None = None
    process: subprocess.Popen[bytes] | None = None
    # The tests' broker saves every second; the fault tests also run Mosquitto's
    # production default (1800 s) and a broker without persistence (issue 13).
    persistence: bool = True
    autosave_interval: int = 1

    def __post_init__(self) -> None:
        self.root = self.root.absolute()

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> str | None:
        """The CA file a client needs to verify this broker (None: plain MQTT)."""
        return str(self.tls.ca_file) if self.tls else None

    def _write_conf(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "mosquitto.conf"
        tls = self.tls
        lines = [
            f"listener {self.port} 127.0.0.1",
            *(
                (f"cafile {tls.ca_file}", f"certfile {tls.cert_file}", f"keyfile {tls.key_file}")
                if tls
                else ()
            ),
            "allow_anonymous true" if "password_file" not in self.extra_conf else "",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.root}/",
            f"autosave_interval {self.autosave_interval}",
            # Offline persistent sessions (ingest restarting) must not drop queued
            # QoS 1 messages: no count or byte limit on the queue, no in-flight cap.
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "max_inflight_messages 0",
            f"log_dest file {self.root}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            self.extra_conf,
        ]
        conf.write_text("\n".join(line for line in lines if line) + "\n")
        return conf

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise ServiceError(
                "mosquitto not found: install it with 'sudo apt-get install mosquitto'"
            )
        conf = self._write_conf()
        self.process = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, 15)
        except ServiceError:
            log_text = (self.root / "mosquitto.log").read_text(errors="replace")[-2000:]
            self.stop()
            raise ServiceError(f"mosquitto did not start: {log_text}") from None

    def stop(self) -> None:
        end_process(self.process, 10)
        self.process = None

    def kill(self) -> None:
        """Stop without a clean shutdown, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
