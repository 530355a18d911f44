"""Where the operator's API credentials come from: a kubeconfig named on the command line, the
pod's ServiceAccount, or KUBECONFIG (`~/.kube/config`), in that order.

One answer serves both clients of the process: reconcile.kube's requests and kopf's watches
(the login handler turns `Credentials` into kopf's ConnectionInfo). Both log in again when the
apiserver answers 401, which is how a rotated ServiceAccount token (the kubelet rewrites the
projected file before the old token expires) or a rewritten kubeconfig is picked up.

Why not the kubernetes package's loader: importing it loads the client's ~700 generated model
modules, about 20 MiB of the operator's resident memory (and kopf imports it as soon as it is
installed), for what is a few files and fields. The fields are the kubeconfig format's own
(client-go's `clientcmd` is the reference); relative paths are relative to the file that names
them. A user entry with an `exec` plugin or an `auth-provider` is refused by name rather than
sent unauthenticated: the operator runs in-cluster under its ServiceAccount, and a developer
running it outside can use a token or client-certificate kubeconfig.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# The ServiceAccount volume every pod gets (its token is a projected, rotated file).
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# The environment the kubelet gives every pod: where the apiserver's Service answers.
HOST_ENV, PORT_ENV = "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"
# User fields that need code run on the user's behalf: refused, by name.
UNSUPPORTED_USER_FIELDS = ("exec", "auth-provider")


class LoginError(Exception):
    """No usable credentials; the message names the file, context, user or field."""


@dataclass(frozen=True)
class Credentials:
    """One apiserver endpoint and how to authenticate to it. PEM text or file paths; a token,
    basic auth or a client certificate (or none, on a plain-HTTP test apiserver)."""

    server: str
    origin: str  # where these came from, for logs and errors
    ca_file: str | None = None
    ca_pem: str | None = None
    insecure: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None
    namespace: str | None = None
    proxy_url: str | None = None

    def headers(self) -> dict[str, str]:
        """The Authorization header, if any (a token wins over basic auth, as in client-go)."""
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.username is not None and self.password is not None:
            raw = f"{self.username}:{self.password}".encode()
            return {"Authorization": f"Basic {base64.b64encode(raw).decode()}"}
        return {}

    def ssl_context(self) -> ssl.SSLContext:
        """Server verification by the cluster's CA (or none when `insecure`), plus the client
        certificate when there is one."""
        ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_pem)
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file or self.cert_pem:
            with (
                _as_file(self.cert_file, self.cert_pem) as cert,
                _as_file(self.key_file, self.key_pem) as key,
            ):
                assert cert is not None  # one of the two is set (checked above)
                ctx.load_cert_chain(certfile=cert, keyfile=key)  # no key: it is in `cert`
        return ctx


@contextlib.contextmanager
def _as_file(path: str | None, pem: str | None) -> Iterator[str | None]:
    """`path`, or `pem` written to a private temporary file for as long as the block runs
    (Python's ssl loads certificates and keys only from files)."""
    if path or pem is None:
        yield path
        return
    with tempfile.NamedTemporaryFile("w", prefix="epd-login-", suffix=".pem") as f:
        f.write(pem)
        f.flush()
        yield f.name


def login(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    service_account: Path = SERVICE_ACCOUNT,
) -> Credentials:
    """The credentials to use now. `kubeconfig` (a path) wins; then the pod's ServiceAccount;
    then KUBECONFIG (paths joined by os.pathsep, merged first-wins) or ~/.kube/config."""
    env = os.environ if environ is None else environ
    if kubeconfig:
        return from_kubeconfig([Path(kubeconfig)], context)
    if env.get(HOST_ENV) and env.get(PORT_ENV) and (service_account / "token").exists():
        return in_cluster(env, service_account)
    paths = [Path(p).expanduser() for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if not paths:
        default = Path(env.get("HOME", "~"), ".kube", "config").expanduser()
        if not default.exists():
            raise LoginError(
                f"no credentials: not in a pod ({HOST_ENV}/{PORT_ENV} unset or no "
                f"{service_account / 'token'}), KUBECONFIG unset and no {default}"
            )
        paths = [default]
    return from_kubeconfig(paths, context)


def in_cluster(env: Mapping[str, str], service_account: Path = SERVICE_ACCOUNT) -> Credentials:
    """The pod's ServiceAccount: the apiserver's Service address from the kubelet's
    environment, the token and CA from the mounted volume (read now: call again after a 401)."""
    host = env[HOST_ENV]
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    token = (service_account / "token").read_text().strip()
    ca = service_account / "ca.crt"
    ns = service_account / "namespace"
    return Credentials(
        server=f"https://{host}:{env[PORT_ENV]}",
        origin=f"ServiceAccount token {service_account / 'token'}",
        ca_file=str(ca) if ca.exists() else None,
        token=token or None,
        namespace=ns.read_text().strip() if ns.exists() else None,
    )


# section -> name -> (entry, the directory of the file that defined it first)
_Sections = dict[str, dict[str, tuple[dict[str, Any], Path]]]


def _merged(paths: list[Path]) -> tuple[str | None, _Sections]:
    """The current-context and the named entries of `paths`, merged first-wins (kubectl's
    rule for KUBECONFIG lists)."""
    current: str | None = None
    sections: _Sections = {"contexts": {}, "clusters": {}, "users": {}}
    for path in paths:
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise LoginError(f"kubeconfig {path}: {exc}") from exc
        if not isinstance(doc, dict):
            raise LoginError(f"kubeconfig {path}: not a mapping")
        current = current or doc.get("current-context") or None
        for section, entries in sections.items():
            for item in doc.get(section) or []:
                name = item.get("name") if isinstance(item, dict) else None
                body = item.get(section[:-1]) if isinstance(item, dict) else None
                if isinstance(name, str) and name not in entries:
                    entries[name] = (body if isinstance(body, dict) else {}, path.parent)
    return current, sections


def from_kubeconfig(paths: list[Path], context: str | None = None) -> Credentials:
    """The credentials of `context` (else the current context) in the merged `paths`."""
    current, sections = _merged(paths)
    where = "kubeconfig " + os.pathsep.join(str(p) for p in paths)
    name = context or current
    if not name:
        raise LoginError(f"{where}: no current-context, and no context was named")
    ctx = _entry(sections, "contexts", name, where)[0]
    cluster, cluster_dir = _entry(sections, "clusters", str(ctx.get("cluster")), where)
    user_name = str(ctx.get("user") or "")
    user, user_dir = _entry(sections, "users", user_name, where) if user_name else ({}, Path())
    for field in UNSUPPORTED_USER_FIELDS:
        if field in user:
            raise LoginError(
                f"{where}: user {user_name!r} authenticates with {field!r}, which the operator "
                "does not run; use a token or a client certificate, or run it in-cluster"
            )
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise LoginError(f"{where}: cluster {ctx.get('cluster')!r} has no server")

    def path_of(entry: dict[str, Any], key: str, base: Path) -> str | None:
        value = entry.get(key)
        return str(base / Path(value).expanduser()) if value else None

    def pem_of(entry: dict[str, Any], key: str) -> str | None:
        return _pem(entry.get(key), f"{where}: {key}")

    token = user.get("token")
    token_file = path_of(user, "tokenFile", user_dir)
    if not token and token_file:  # read now: a 401 makes the caller log in again
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise LoginError(f"{where}: user {user_name!r} tokenFile: {exc}") from exc
    # Inline data wins over a path naming the same thing (client-go's rule).
    ca_pem = pem_of(cluster, "certificate-authority-data")
    cert_pem = pem_of(user, "client-certificate-data")
    key_pem = pem_of(user, "client-key-data")
    return Credentials(
        server=server,
        origin=f"{where}, context {name!r}",
        ca_file=None if ca_pem else path_of(cluster, "certificate-authority", cluster_dir),
        ca_pem=ca_pem,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        cert_file=None if cert_pem else path_of(user, "client-certificate", user_dir),
        key_file=None if key_pem else path_of(user, "client-key", user_dir),
        cert_pem=cert_pem,
        key_pem=key_pem,
        token=str(token) if token else None,
        username=user.get("username"),
        password=user.get("password"),
        namespace=ctx.get("namespace") or None,
        proxy_url=cluster.get("proxy-url") or None,
    )


def _pem(value: object, what: str) -> str | None:
    """A kubeconfig `*-data` field: base64 of PEM text."""
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise LoginError(f"{what} is not base64 PEM: {exc}") from exc


def _entry(
    sections: dict[str, dict[str, tuple[dict[str, Any], Path]]],
    section: str,
    name: str,
    where: str,
) -> tuple[dict[str, Any], Path]:
    try:
        return sections[section][name]
    except KeyError:
        raise LoginError(f"{where}: no {section[:-1]} named {name!r}") from None
