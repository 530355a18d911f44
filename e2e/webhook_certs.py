"""A throwaway CA and a serving certificate for one IP address (openssl), for running the
operator's admission webhook as a local process that the test cluster's apiserver calls."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_certs(directory: Path, ip: str = "127.0.0.1") -> Path:
    """Writes ca.crt, tls.crt and tls.key (for `ip`) into `directory`; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(
            ["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60
        )

    openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=epd-test-webhook-ca",
    )
    openssl("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", f"/CN={ip}")
    (directory / "san.ext").write_text(f"subjectAltName=IP:{ip}\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "tls.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )
    return directory
