# ruff: noqa: E501 - the table reads best one row a line
"""Bad input, counted: one table across the verbs.

Each row runs the real CLI (click's runner, in process) on one bad input and asserts:
exit code != 0; exactly one error line (`error: …`, or click's `Error: …` for a usage
error), naming the file, the flag, the field or the object; no traceback; and nothing
changed: no write request reached the (faked) API server, and every file under the
node's root is byte for byte what it was. The kubeconfig rows with TLS run against a
real TLS server on 127.0.0.1 (the wrong CA), the others against the faked transport.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubehoist.cli import cli
from kubehoist.kube import client as kube_client
from kubehoist.manifest import load_static_pod
from kubehoist.render import RenderOptions
from tests.unit.fakenode import FakeNode, Pki
from tests.unit.kubefake import FakeCluster, lease, pod

CORPUS = Path(__file__).parent / "corpus" / "kube-controller-manager"
KUBEADM = CORPUS / "kubeadm-v1.30.14.yaml"
FAKE_SERVER = "https://10.0.0.1:6443"
UNREACHABLE = "https://127.0.0.1:1"
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig_doc(
    *, server: str = FAKE_SERVER, user: dict[str, Any] | None = None, ca: bytes | None = None
) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": server}
    if ca is not None:
        cluster["certificate-authority-data"] = b64(ca)
    else:
        cluster["insecure-skip-tls-verify"] = True
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": cluster}],
        "users": [{"name": "jane", "user": user or {"token": "t0ken"}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "jane"}}],
    }


class TlsServer:
    """A TLS listener on 127.0.0.1 with its own self-signed certificate: a client that
    trusts another CA fails its handshake."""

    def __init__(self, tmp: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        (tmp / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp / "tls.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(tmp / "tls.crt", tmp / "tls.key")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)  # here: the thread may start after close()
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@dataclass
class Ctx:
    tmp: Path
    node: FakeNode
    fake: FakeCluster
    tls: TlsServer
    pki: Pki

    @property
    def root(self) -> str:
        return str(self.node.root)

    def file(self, name: str, text: str | bytes) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return str(path)

    def kc(self, name: str = "good", **kwargs: Any) -> str:
        return self.file(f"kubeconfigs/{name}", json.dumps(kubeconfig_doc(**kwargs)))

    def kc_cert(self, name: str, **validity: datetime) -> str:
        user = {
            "client-certificate-data": b64(self.pki.cert_pem("kubernetes-admin", **validity)),
            "client-key-data": b64(self.pki.key_pem()),
        }
        return self.kc(name, user=user)

    def manifest(self, edit: Callable[[str], str], name: str = "kcm.yaml") -> str:
        return self.file(f"manifests/{name}", edit(KUBEADM.read_text()))

    def edited(self, change: Callable[[dict[str, Any]], None], name: str = "kcm.yaml") -> str:
        doc = yaml.safe_load(KUBEADM.read_text())
        change(doc)
        return self.file(f"manifests/{name}", yaml.safe_dump(doc))


def args_of(doc: dict[str, Any]) -> list[str]:
    return doc["spec"]["containers"][0]["command"]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Ctx], list[str]]
    needles: tuple[str, ...]


def c(id: str, argv: Callable[[Ctx], list[str]], *needles: str) -> Case:
    return Case(id, argv, needles)


def render(ctx: Ctx, manifest: str, *extra: str) -> list[str]:
    return ["render", "-f", manifest, "--host-root", ctx.root, *extra]


def nested(depth: int) -> str:
    return "a: " + "[" * depth + "]" * depth + "\n"


def alias_bomb() -> str:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


PAST = datetime.now(UTC) - timedelta(days=2)
FUTURE = datetime.now(UTC) + timedelta(days=2)

CASES: list[Case] = [
    # --- kubeconfigs and the API server, across the verbs that talk to it ----------------
    c("status: kubeconfig missing", lambda x: ["status", "--kubeconfig", "/nonexistent/kc"], "/nonexistent/kc", "no such file"),
    c("pivot: kubeconfig missing", lambda x: ["pivot", "--kubeconfig", "/nonexistent/kc", "--host-root", x.root], "/nonexistent/kc"),
    c("rollback: kubeconfig missing", lambda x: ["rollback", "--kubeconfig", "/nonexistent/kc"], "/nonexistent/kc"),
    c("guard install: kubeconfig missing", lambda x: ["guard", "install", "--kubeconfig", "/nonexistent/kc"], "/nonexistent/kc"),
    c("status: kubeconfig not YAML", lambda x: ["status", "--kubeconfig", x.file("kc-bad", "{: [")], "kc-bad"),
    c("status: kubeconfig a list", lambda x: ["status", "--kubeconfig", x.file("kc-list", "- a\n- b\n")], "kc-list", "not a kubeconfig"),
    c("status: unknown context", lambda x: ["status", "--kubeconfig", x.kc(), "--context", "nope"], '"nope"', "does not exist"),
    c("pivot: unknown context", lambda x: ["pivot", "--kubeconfig", x.kc(), "--context", "nope", "--host-root", x.root], '"nope"'),
    c("upgrade prepare: unknown context", lambda x: ["upgrade", "prepare", "--kubeconfig", x.kc(), "--context", "nope"], '"nope"'),
    c("status: expired client certificate", lambda x: ["status", "--kubeconfig", x.kc_cert("expired", not_after=PAST)], "expired", '"jane"'),
    c("pivot: expired client certificate", lambda x: ["pivot", "--kubeconfig", x.kc_cert("expired", not_after=PAST), "--host-root", x.root], "expired", "kubeconfigs/expired"),
    c("rollback: expired client certificate", lambda x: ["rollback", "--kubeconfig", x.kc_cert("expired", not_after=PAST)], "expired"),
    c("credentials refresh: expired client certificate", lambda x: ["credentials", "refresh", "--kubeconfig", x.kc_cert("expired", not_after=PAST), "--host-root", x.root], "expired"),
    c("status: client certificate not valid yet", lambda x: ["status", "--kubeconfig", x.kc_cert("future", not_before=FUTURE)], "not valid before"),
    c("guard install: client certificate not valid yet", lambda x: ["guard", "install", "--kubeconfig", x.kc_cert("future", not_before=FUTURE)], "not valid before"),
    c("status: wrong CA", lambda x: ["status", "--kubeconfig", x.kc("wrongca", server=x.tls.url, ca=x.pki.cert_pem())], "certificate"),
    c("pivot: wrong CA", lambda x: ["pivot", "--kubeconfig", x.kc("wrongca", server=x.tls.url, ca=x.pki.cert_pem()), "--host-root", x.root], "certificate"),
    c("status: unreachable server", lambda x: ["status", "--kubeconfig", x.kc("down", server=UNREACHABLE)], UNREACHABLE),
    c("watch: unreachable server", lambda x: ["watch", "--for", "1", "--kubeconfig", x.kc("down", server=UNREACHABLE)], UNREACHABLE),
    c("rollback: unreachable server (ridden out within --timeout)", lambda x: ["rollback", "--timeout", "1", "--kubeconfig", x.kc("down", server=UNREACHABLE)], UNREACHABLE),
    c("guard install: unreachable server (ridden out within --timeout)", lambda x: ["guard", "install", "--timeout", "1", "--kubeconfig", x.kc("down", server=UNREACHABLE)], UNREACHABLE),
    c("upgrade complete: unreachable server (ridden out within --timeout)", lambda x: ["upgrade", "complete", "--timeout", "1", "--kubeconfig", x.kc("down", server=UNREACHABLE), "--host-root", x.root], UNREACHABLE),
    c("status: token refused", lambda x: ["status", "--kubeconfig", x.kc("refused", user={"token": "refused"})], "Unauthorized"),
    c("rollback: token refused", lambda x: ["rollback", "--kubeconfig", x.kc("refused", user={"token": "refused"})], "Unauthorized"),
    c("guard uninstall: token refused", lambda x: ["guard", "uninstall", "--kubeconfig", x.kc("refused", user={"token": "refused"})], "Unauthorized"),
    # --- render: manifests ------------------------------------------------------------------
    c("render: manifest missing", lambda x: render(x, "/nonexistent/kcm.yaml"), "/nonexistent/kcm.yaml"),
    c("render: not YAML", lambda x: render(x, x.file("m/bad.yaml", "kind: [")), "bad.yaml"),
    c("render: a list, not a Pod", lambda x: render(x, x.file("m/list.yaml", "- 1\n- 2\n")), "list.yaml"),
    c("render: wrong kind", lambda x: render(x, x.manifest(lambda t: t.replace("kind: Pod", "kind: Deployment"))), "kcm.yaml", "Deployment"),
    c("render: several documents", lambda x: render(x, x.manifest(lambda t: t + "---\n" + t)), "kcm.yaml"),
    c("render: no containers", lambda x: render(x, x.edited(lambda d: d["spec"].update(containers=[]))), "kcm.yaml", "containers"),
    c("render: not the component", lambda x: render(x, x.edited(lambda d: d["spec"]["containers"][0].update(command=["nginx"], name="web"))), "kcm.yaml"),
    c("render: boolean flag as two words", lambda x: render(x, x.edited(lambda d: args_of(d).extend(["--use-service-account-credentials", "true"]))), "--use-service-account-credentials", "true"),
    c("render: --leader-elect false as two words", lambda x: render(x, x.edited(lambda d: args_of(d).extend(["--leader-elect", "false"]))), "--leader-elect"),
    c("render: stray positional argument", lambda x: render(x, x.edited(lambda d: args_of(d).append("stray"))), "stray"),
    c("render: --leader-elect=false", lambda x: render(x, x.edited(lambda d: args_of(d).append("--leader-elect=false"))), "--leader-elect"),
    c("render: relative mountPath", lambda x: render(x, x.edited(lambda d: d["spec"]["containers"][0]["volumeMounts"][0].update(mountPath="etc/ssl"))), "mountPath"),
    c("render: volumeMount naming no volume", lambda x: render(x, x.edited(lambda d: d["spec"]["containers"][0]["volumeMounts"][0].update(name="ghost"))), "ghost"),
    c("render: duplicate keys", lambda x: render(x, x.manifest(lambda t: t.replace("kind: Pod", "kind: Pod\nkind: Pod", 1))), "kind"),
    c("render: nested 5,000 levels", lambda x: render(x, x.file("m/deep.yaml", nested(5000))), "deep.yaml"),
    c("render: alias bomb", lambda x: render(x, x.file("m/bomb.yaml", alias_bomb())), "bomb.yaml"),
    c("render: 20 MB file", lambda x: render(x, x.file("m/huge.yaml", "# " + "x" * (20 << 20) + "\n")), "huge.yaml"),
    c("render: a file flag naming a missing file", lambda x: render(x, x.edited(lambda d: args_of(d).append("--cluster-signing-cert-file=/etc/kubernetes/pki/nope.crt"))), "nope.crt"),
    c("render: a file flag naming a directory", lambda x: render(x, x.edited(lambda d: args_of(d).append("--cluster-signing-cert-file=/etc/kubernetes/pki"))), "/etc/kubernetes/pki"),
    c("render: --replicas 0", lambda x: render(x, str(KUBEADM), "--replicas", "0"), "--replicas"),
    c("render: --lease-duration not a duration", lambda x: render(x, str(KUBEADM), "--lease-duration", "soon"), "--lease-duration"),
    c("render: --renew-deadline over --lease-duration", lambda x: render(x, str(KUBEADM), "--lease-duration", "5s", "--renew-deadline", "10s"), "--renew-deadline"),
    c("render: --port out of range", lambda x: render(x, str(KUBEADM), "--port", "70000"), "--port"),
    c("render: --set-flag without a value", lambda x: render(x, str(KUBEADM), "--set-flag", "v"), "--set-flag"),
    # --- flags out of range, unknown names ------------------------------------------------
    c("pivot: --replicas 0", lambda x: ["pivot", "--replicas", "0"], "--replicas"),
    c("pivot: --timeout not a number", lambda x: ["pivot", "--timeout", "soon"], "--timeout"),
    c("pivot: unknown component", lambda x: ["pivot", "kube-proxy", "--kubeconfig", x.kc()], "kube-proxy"),
    c("pivot: unknown phase to skip", lambda x: ["pivot", "--kubeconfig", x.kc(), "--host-root", x.root, "--skip-phases", "nope"], "nope"),
    c("pivot: --host-root missing", lambda x: ["pivot", "--kubeconfig", x.kc(), "--host-root", "/nonexistent/root"], "/nonexistent/root"),
    c("status: unknown component", lambda x: ["status", "etcd", "--kubeconfig", x.kc()], "etcd"),
    c("status: --observe negative", lambda x: ["status", "--observe", "-1"], "--observe"),
    c("status: -o unknown", lambda x: ["status", "-o", "xml"], "xml"),
    c("watch: --for negative", lambda x: ["watch", "--for", "-5"], "--for"),
    c("watch: unknown component", lambda x: ["watch", "kube-apiserver", "--kubeconfig", x.kc()], "kube-apiserver"),
    c("guard install: --cert-days 0", lambda x: ["guard", "install", "--cert-days", "0"], "--cert-days"),
    c("guard install: --issuer unknown", lambda x: ["guard", "install", "--issuer", "vault"], "--issuer"),
    c("guard install: no control-plane nodes", lambda x: ["guard", "install", "--kubeconfig", x.kc()], "control-plane"),
    c("lab up: --control-planes 0", lambda x: ["lab", "up", "--control-planes", "0"], "--control-planes"),
    c("lab up: --host-port 70000", lambda x: ["lab", "up", "--host-port", "70000"], "--host-port"),
    c("lab up: unsupported version", lambda x: ["lab", "up", "--kubernetes-version", "v1.20.0", "--root", str(x.tmp / "lab")], "v1.20.0"),
    c("timeline: file missing", lambda x: ["timeline", "/nonexistent/events.jsonl"], "/nonexistent/events.jsonl"),
    c("timeline: not JSON lines", lambda x: ["timeline", x.file("events.jsonl", "not json\n"), "-o", str(x.tmp / "t.svg")], "events.jsonl"),
    c("timeline: --width 0", lambda x: ["timeline", x.file("e.jsonl", ""), "--width", "0"], "--width"),
    # --- nothing to act on ------------------------------------------------------------------
    c("rollback: nothing to roll back", lambda x: ["rollback", "--kubeconfig", x.kc()], "kube-controller-manager"),
    c("upgrade prepare: nothing pivoted", lambda x: ["upgrade", "prepare", "--kubeconfig", x.kc()], "no component is pivoted"),
    c("upgrade complete: nothing prepared", lambda x: ["upgrade", "complete", "--kubeconfig", x.kc(), "--host-root", x.root], "pivoted"),
    c("credentials refresh: not pivoted", lambda x: ["credentials", "refresh", "--kubeconfig", x.kc(), "--host-root", x.root], "kube-controller-manager"),
]  # fmt: skip


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture
def ctx(tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ctx]:
    node = FakeNode(tmp_path / "node", pki)
    node.populate(
        load_static_pod(KUBEADM.read_text(), source=KUBEADM.name),
        RenderOptions(now=datetime.now(UTC)),
    )
    manifests = node.root / "etc/kubernetes/manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    (manifests / "kube-controller-manager.yaml").write_bytes(KUBEADM.read_bytes())
    fake = FakeCluster(
        leases=[lease("kube-controller-manager")],
        pods=[pod("kube-controller-manager-cp-1", static=True)],
    )

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.port == 1:
            raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)
        if request.headers.get("authorization") == "Bearer refused":
            fake.requests.append(request)
            return httpx2.Response(
                401,
                json={"kind": "Status", "code": 401, "reason": "Unauthorized",
                      "message": "Unauthorized"},
            )  # fmt: skip
        return fake.handler(request)

    tls = TlsServer(tmp_path)
    real_sync, real_async = kube_client.tls_transport, kube_client.async_tls_transport

    def sync_transport(config: Any) -> Any:
        if config.cluster.server == tls.url:
            return real_sync(config)
        return httpx2.MockTransport(handler)

    def async_transport(config: Any) -> Any:
        if config.cluster.server == tls.url:
            return real_async(config)
        return httpx2.MockTransport(handler)

    monkeypatch.setattr(kube_client, "tls_transport", sync_transport)
    monkeypatch.setattr(kube_client, "async_tls_transport", async_transport)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kube/config
    (tmp_path / "kubeconfigs").mkdir()
    (tmp_path / "manifests").mkdir()
    (tmp_path / "m").mkdir()
    found = Ctx(tmp=tmp_path, node=node, fake=fake, tls=tls, pki=pki)
    try:
        yield found
    finally:
        tls.close()


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def one_error_line(result: Result) -> str:
    lines = [line for line in (result.stderr or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error: ", "Error: "))]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_at_least_sixty_bad_inputs() -> None:
    assert len(CASES) >= 60, len(CASES)
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, ctx: Ctx) -> None:
    before = tree(ctx.node.root)
    argv = case.argv(ctx)
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code not in (0, None), (argv, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in (result.stderr or "") + (result.stdout or "")
    line = one_error_line(result)
    for needle in case.needles:
        assert needle in line, (needle, line)
    writes = [f"{r.method} {r.url.path}" for r in ctx.fake.requests if r.method in WRITES]
    assert writes == [], writes
    assert tree(ctx.node.root) == before
