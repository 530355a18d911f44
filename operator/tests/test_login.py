"""reconcile.login: which credentials the operator finds, and the bad kubeconfigs it refuses by
name. Real files in a temporary directory; the HTTP side is in test_kube_session.py."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from epd_operator.reconcile.login import (
    HOST_ENV,
    PORT_ENV,
    Credentials,
    LoginError,
    from_kubeconfig,
    in_cluster,
    login,
)

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kubeconfig(
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    *,
    current: str | None = "dev",
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": "https://10.0.0.1:6443", **(cluster or {})}}
        ],
        "users": [{"name": "u", "user": user if user is not None else {"token": "t0"}}],
        "contexts": [{"name": "dev", "context": context or {"cluster": "c", "user": "u"}}],
    }
    if current is not None:
        doc["current-context"] = current
    return doc


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def service_account(tmp_path: Path, token: str = "sa-token") -> Path:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text(token + "\n")
    (sa / "ca.crt").write_text(PEM)
    (sa / "namespace").write_text("epd-system\n")
    return sa


def test_a_token_kubeconfig_gives_its_server_token_and_namespace(tmp_path: Path) -> None:
    cfg = kubeconfig(context={"cluster": "c", "user": "u", "namespace": "team"})
    creds = from_kubeconfig([write(tmp_path / "config", cfg)])
    assert creds.server == "https://10.0.0.1:6443"
    assert creds.headers() == {"Authorization": "Bearer t0"}
    assert creds.namespace == "team"
    assert "context 'dev'" in creds.origin


def test_relative_paths_are_relative_to_the_file_that_names_them(tmp_path: Path) -> None:
    cfg = kubeconfig(
        {"certificate-authority": "pki/ca.crt"},
        {"client-certificate": "pki/me.crt", "client-key": "/abs/me.key"},
    )
    creds = from_kubeconfig([write(tmp_path / "kube" / "config", cfg)])
    assert creds.ca_file == str(tmp_path / "kube" / "pki" / "ca.crt")
    assert creds.cert_file == str(tmp_path / "kube" / "pki" / "me.crt")
    assert creds.key_file == "/abs/me.key"
    assert creds.headers() == {}  # no token: a client certificate authenticates


def test_inline_data_wins_over_a_path_and_is_decoded_to_pem(tmp_path: Path) -> None:
    cfg = kubeconfig(
        {"certificate-authority": "ca.crt", "certificate-authority-data": b64(PEM)},
        {"client-certificate-data": b64(PEM), "client-key": "k.pem", "client-key-data": b64("K")},
    )
    creds = from_kubeconfig([write(tmp_path / "config", cfg)])
    assert (creds.ca_file, creds.ca_pem) == (None, PEM)
    assert (creds.cert_file, creds.cert_pem) == (None, PEM)
    assert (creds.key_file, creds.key_pem) == (None, "K")


def test_a_token_file_is_read_and_basic_auth_is_encoded(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("from-file\n")
    creds = from_kubeconfig([write(tmp_path / "a", kubeconfig(user={"tokenFile": "tok"}))])
    assert creds.token == "from-file"
    basic = from_kubeconfig(
        [write(tmp_path / "b", kubeconfig(user={"username": "ann", "password": "pw"}))]
    )
    assert basic.headers() == {"Authorization": "Basic " + b64("ann:pw")}


def test_merged_files_first_wins_and_a_named_context_overrides_current(tmp_path: Path) -> None:
    first = kubeconfig(current=None)
    second = kubeconfig({"server": "https://second:6443"}, current="dev")
    second["contexts"].append({"name": "other", "context": {"cluster": "c2", "user": "u"}})
    second["clusters"].append({"name": "c2", "cluster": {"server": "https://c2:6443"}})
    paths = [write(tmp_path / "1", first), write(tmp_path / "2", second)]
    assert from_kubeconfig(paths).server == "https://10.0.0.1:6443"  # c from the first file
    assert from_kubeconfig(paths, "other").server == "https://c2:6443"


BAD_KUBECONFIGS: list[tuple[str, dict[str, Any], str]] = [
    ("no-current-context", kubeconfig(current=None), "no current-context"),
    ("missing-context", kubeconfig(current="prod"), "no context named 'prod'"),
    (
        "missing-cluster",
        kubeconfig(context={"cluster": "gone", "user": "u"}),
        "no cluster named 'gone'",
    ),
    ("missing-user", kubeconfig(context={"cluster": "c", "user": "x"}), "no user named 'x'"),
    ("no-server", kubeconfig({"server": ""}), "cluster 'c' has no server"),
    (
        "exec-plugin",
        kubeconfig(user={"exec": {"command": "aws", "apiVersion": "x"}}),
        "user 'u' authenticates with 'exec'",
    ),
    (
        "auth-provider",
        kubeconfig(user={"auth-provider": {"name": "gcp"}}),
        "user 'u' authenticates with 'auth-provider'",
    ),
    (
        "bad-ca-data",
        kubeconfig({"certificate-authority-data": "not base64!"}),
        "certificate-authority-data is not base64 PEM",
    ),
    (
        "missing-token-file",
        kubeconfig(user={"tokenFile": "nowhere"}),
        "user 'u' tokenFile",
    ),
]


@pytest.mark.parametrize(
    ("doc", "message"),
    [(d, m) for _, d, m in BAD_KUBECONFIGS],
    ids=[n for n, _, _ in BAD_KUBECONFIGS],
)
def test_a_bad_kubeconfig_is_refused_naming_what_is_wrong(
    tmp_path: Path, doc: dict[str, Any], message: str
) -> None:
    path = write(tmp_path / "config", doc)
    with pytest.raises(LoginError) as err:
        from_kubeconfig([path])
    assert str(err.value).startswith(f"kubeconfig {path}")
    assert message in str(err.value)


def test_an_unreadable_or_malformed_kubeconfig_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(LoginError, match=r"kubeconfig .*missing"):
        from_kubeconfig([tmp_path / "missing"])
    (tmp_path / "list").write_text("- a\n- b\n")
    with pytest.raises(LoginError, match="list: not a mapping"):
        from_kubeconfig([tmp_path / "list"])


def test_in_cluster_reads_the_service_account_and_the_kubelets_environment(
    tmp_path: Path,
) -> None:
    sa = service_account(tmp_path)
    creds = in_cluster({HOST_ENV: "10.96.0.1", PORT_ENV: "443"}, sa)
    assert creds.server == "https://10.96.0.1:443"
    assert creds.token == "sa-token"
    assert creds.ca_file == str(sa / "ca.crt")
    assert creds.namespace == "epd-system"
    assert in_cluster({HOST_ENV: "fd00::1", PORT_ENV: "443"}, sa).server == "https://[fd00::1]:443"


def test_a_named_kubeconfig_wins_then_the_service_account_then_kubeconfig_env(
    tmp_path: Path,
) -> None:
    sa = service_account(tmp_path)
    named = write(tmp_path / "named", kubeconfig({"server": "https://named:1"}))
    listed = write(tmp_path / "listed", kubeconfig({"server": "https://listed:1"}))
    pod = {HOST_ENV: "10.96.0.1", PORT_ENV: "443", "KUBECONFIG": str(listed)}

    def server(kubeconfig: str | None, env: dict[str, str], sa_dir: Path = sa) -> str:
        creds: Credentials = login(kubeconfig, environ=env, service_account=sa_dir)
        return creds.server

    assert server(str(named), pod) == "https://named:1"
    assert server(None, pod) == "https://10.96.0.1:443"
    assert server(None, pod, tmp_path / "no-sa") == "https://listed:1"
    assert server(None, {"KUBECONFIG": str(listed)}) == "https://listed:1"
    home = tmp_path / "home"
    write(home / ".kube" / "config", kubeconfig({"server": "https://home:1"}))
    assert server(None, {"HOME": str(home)}) == "https://home:1"
    with pytest.raises(LoginError, match="no credentials: not in a pod"):
        server(None, {"HOME": str(tmp_path / "nobody")})
