"""Real Redis topologies on loopback for the failover tests: a primary with a replica and
three sentinels (tests/test_sentinel.py), and a three-primary cluster with a replica each
(tests/test_cluster.py). Free ports, one temp dir each; every process is stopped by the PID
started here, and the dir removed."""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from devtools.ports import free_port, wait_for_port, wait_until

SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
SENTINEL = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
MASTER = "mymaster"


class Node:
    """One redis-server (or redis-sentinel) process, from a config file in its own dir."""

    def __init__(self, root: Path, name: str, lines: list[str], binary: str = SERVER):
        self.port = free_port()
        self.dir = root / name
        self.dir.mkdir()
        self.conf = self.dir / "redis.conf"
        self.lines, self.binary = lines, binary
        self.password: str | None = None  # what client() logs in with
        self.tls: Path | None = None  # a dir with ca.crt, node.crt, node.key: TLS only
        self.process: subprocess.Popen | None = None

    def start(self) -> Node:
        base = [f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}",
                f"logfile {self.dir / 'log'}", "save \"\"", "appendonly no"]  # fmt: skip
        if self.binary == SENTINEL:
            base = base[:4]  # a sentinel has no dataset
        if self.tls:  # TLS only, on the same port; to other nodes (and sentinels) too
            base += ["port 0", f"tls-port {self.port}", f"tls-cert-file {self.tls}/node.crt",
                     f"tls-key-file {self.tls}/node.key", f"tls-ca-cert-file {self.tls}/ca.crt",
                     "tls-auth-clients no", "tls-replication yes"]  # fmt: skip
        self.conf.write_text("\n".join([*base, *self.lines]) + "\n")
        self.process = subprocess.Popen([self.binary, str(self.conf)], stdout=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, process=self.process)
        except BaseException:
            self.kill()
            raise
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is flushed or handed over."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, **options) -> redis.Redis:
        options = {"decode_responses": True, "socket_timeout": 2, "password": self.password,
                   **options}  # fmt: skip
        if self.tls:
            options.update(ssl=True, ssl_ca_certs=str(self.tls / "ca.crt"))
        return redis.Redis(host="127.0.0.1", port=self.port, **options)

    def info(self, section: str) -> dict:
        with self.client() as client:
            return client.info(section)


class SentinelSet:
    """A primary, one replica and three sentinels (quorum 2), quick to notice a death."""

    def __init__(
        self,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 2000,
        password: str | None = None,
        sentinel_password: str | None = None,
        tls: bool = False,
    ):
        """password: the nodes' requirepass (and masterauth); sentinel_password: the
        sentinels' own requirepass; tls: every node and sentinel speaks TLS only (a CA of
        its own, in the temp dir: self.ca)."""
        self.root = Path(tempfile.mkdtemp(prefix="test-sentinel-"))
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self.password, self.sentinel_password = password, sentinel_password
        self.tls = make_certificates(self.root / "tls") if tls else None
        self.servers: list[Node] = []
        self.sentinels: list[Node] = []

    def start(self) -> SentinelSet:
        """Everything up and settled; on any failure, everything started is stopped."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> SentinelSet:
        # Diskless, immediate syncs: a replica is in step within milliseconds.
        sync = ["repl-diskless-sync yes", "repl-diskless-sync-delay 0"]
        if self.password:
            sync += [f"requirepass {self.password}", f"masterauth {self.password}"]
        primary = Node(self.root, "primary", sync)
        replica = Node(self.root, "replica", [*sync, f"replicaof 127.0.0.1 {primary.port}"])
        self.servers = [primary, replica]
        for node in self.servers:
            node.password, node.tls = self.password, self.tls
            node.start()
        wait_until(lambda: replica.info("replication").get("master_link_status") == "up", 10)
        watch = [
            f"sentinel monitor {MASTER} 127.0.0.1 {primary.port} 2",
            f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}",
            f"sentinel failover-timeout {MASTER} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {MASTER} 1",
        ]
        if self.password:
            watch.append(f"sentinel auth-pass {MASTER} {self.password}")
        if self.sentinel_password:
            watch.append(f"requirepass {self.sentinel_password}")  # also between sentinels
        for i in range(3):
            sentinel = Node(self.root, f"sentinel{i}", watch, SENTINEL)
            sentinel.password, sentinel.tls = self.sentinel_password, self.tls
            self.sentinels.append(sentinel.start())
        self.wait_settled()
        return self

    def wait_settled(self, timeout: float = 20) -> None:
        """Every sentinel knows the primary, a replica and the two other sentinels."""

        def settled():
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    state = client.sentinel_master(MASTER)
                    if state.get("num-slaves", 0) < 1 or state.get("num-other-sentinels") < 2:
                        return False
                    if any(r["is_sdown"] for r in client.sentinel_slaves(MASTER)):
                        return False
            return True

        if not wait_until(settled, timeout, 0.1):
            raise TimeoutError("the sentinels did not settle")

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def primary_port(self) -> int | None:
        """The primary's port as the sentinels tell it (the first that answers)."""
        for sentinel in self.sentinels:
            try:
                with sentinel.client(socket_timeout=0.5) as client:
                    address = client.sentinel_get_master_addr_by_name(MASTER)
            except redis.RedisError:
                continue
            if address:
                return int(address[1])
        return None

    def node(self, port: int) -> Node:
        return next(n for n in self.servers if n.port == port)

    def stop(self) -> None:
        for node in [*self.sentinels, *self.servers]:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class Cluster:
    """Three primaries with one replica each (`redis-cli --cluster create`), quick to fail
    over (cluster-node-timeout)."""

    def __init__(self, node_timeout_ms: int = 1000):
        self.root = Path(tempfile.mkdtemp(prefix="test-cluster-"))
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[Node] = []

    def start(self) -> Cluster:
        """Created and ok; on any failure, every node started is stopped."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Cluster:
        for i in range(6):
            bus = free_port()  # not port + 10000: that one may be taken, or past 65535
            lines = ["cluster-enabled yes", f"cluster-config-file {self.root}/nodes-{i}.conf",
                     f"cluster-node-timeout {self.node_timeout_ms}", f"cluster-port {bus}",
                     "repl-diskless-sync yes", "repl-diskless-sync-delay 0"]  # fmt: skip
            self.nodes.append(Node(self.root, f"node{i}", lines).start())
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [CLI, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 20) -> None:
        """cluster_state:ok on every live node, and each primary has its replica in step."""

        def ok():
            live = [n for n in self.nodes if n.alive]
            for node in live:
                with node.client() as client:
                    if client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                        return False
            return all(
                n.info("replication").get("master_link_status") == "up"
                for n in live
                if n.info("replication")["role"] == "slave"
            )

        if not wait_until(ok, timeout, 0.1):
            raise TimeoutError("the cluster did not reach cluster_state:ok")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def owner(self, key: str) -> Node:
        """The live primary serving key's slot, as the cluster itself tells it."""
        live = next(n for n in self.nodes if n.alive)
        with live.client() as client:
            slot = client.execute_command("CLUSTER KEYSLOT", key)
            for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(primary[1]))
        raise LookupError(key)

    def replica_of(self, primary: Node) -> Node:
        for node in self.nodes:
            if node.alive and node is not primary:
                info = node.info("replication")
                if info["role"] == "slave" and int(info["master_port"]) == primary.port:
                    return node
        raise LookupError(primary.port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def make_certificates(where: Path) -> Path:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it (openssl)."""
    where.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "1", "-subj", "/CN=test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (where / "san").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "node.crt", "-days", "1", "-extfile", "san")  # fmt: skip
    return where


def seconds_since(start: float) -> float:
    return round(time.monotonic() - start, 3)
