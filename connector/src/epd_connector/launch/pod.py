"""Who this pod is: the role and pod identity `epd-engine` reads from its environment.

The operator renders these variables into every engine pod (Downward API for the pod fields),
so the launcher never talks to the Kubernetes API. Pure: `from_env` takes the mapping, so the
same code serves the launcher (os.environ), `epdctl render --pod` and the tests. Every error
names the variable and the value it got.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from .config import ROLE_NAMES, LaunchConfigError, RoleName

ENV_LAUNCH_CONFIG: Final = "EPD_LAUNCH_CONFIG"
DEFAULT_LAUNCH_CONFIG: Final = "/etc/epd/launch.json"
ENV_ROLE: Final = "EPD_ROLE"
ENV_ENGINE: Final = "EPD_ENGINE"
ENV_POD_IP: Final = "POD_IP"
ENV_POD_NAME: Final = "POD_NAME"
ENV_POD_NAMESPACE: Final = "POD_NAMESPACE"

Engine = Literal["vllm", "sim"]
ENGINES: tuple[Engine, ...] = ("vllm", "sim")

# StatefulSet pods are named <statefulset>-<ordinal>; the ordinal makes engine ids stable.
_STATEFULSET_POD = re.compile(r"^(?P<set>\S+)-(?P<ordinal>0|[1-9][0-9]*)$")


class PodEnvError(LaunchConfigError):
    """A pod environment variable is missing or malformed; the message names it.

    A LaunchConfigError: to callers both are "this pod cannot be launched as configured".
    """


@dataclass(frozen=True)
class PodContext:
    """The pod-specific facts the argv depends on (unknown to the operator at render time)."""

    ip: str
    ordinal: int
    name: str = ""
    namespace: str = ""
    role: RoleName | None = None  # from EPD_ROLE; build_argv refuses a different role

    @classmethod
    def create(
        cls,
        ip: str,
        ordinal: int,
        name: str = "",
        namespace: str = "",
        role: RoleName | None = None,
    ) -> PodContext:
        """Validated constructor for callers that know the pod without an environment."""
        if ordinal < 0:
            raise PodEnvError(f"pod ordinal must be >= 0, got {ordinal}")
        ip = _parse_ip(ENV_POD_IP, ip)
        return cls(ip=ip, ordinal=ordinal, name=name, namespace=namespace, role=role)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PodContext:
        """EPD_ROLE, POD_IP, POD_NAME (-> ordinal) and POD_NAMESPACE; errors name the variable."""
        name = _require(env, ENV_POD_NAME)
        return cls(
            ip=_parse_ip(ENV_POD_IP, _require(env, ENV_POD_IP)),
            ordinal=ordinal_of(name),
            name=name,
            namespace=_require(env, ENV_POD_NAMESPACE),
            role=role_from_env(env),
        )


def _require(env: Mapping[str, str], key: str) -> str:
    value = env.get(key, "").strip()
    if not value:
        raise PodEnvError(f"{key}: required environment variable is missing or empty")
    return value


def _parse_ip(key: str, value: str) -> str:
    try:
        # Normalised so IPv6 spellings compare equal and render one way.
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise PodEnvError(f"{key}={value!r}: not an IP address") from None


def ordinal_of(pod_name: str) -> int:
    """The StatefulSet ordinal at the end of `pod_name` (`epd-demo-decode-3` -> 3)."""
    match = _STATEFULSET_POD.match(pod_name)
    if match is None:
        raise PodEnvError(
            f"{ENV_POD_NAME}={pod_name!r}: not a StatefulSet pod name (<statefulset>-<ordinal>)"
        )
    return int(match.group("ordinal"))


def role_from_env(env: Mapping[str, str]) -> RoleName:
    value = _require(env, ENV_ROLE)
    if value not in ROLE_NAMES:
        raise PodEnvError(f"{ENV_ROLE}={value!r}: must be one of {', '.join(ROLE_NAMES)}")
    return value


def engine_from_env(env: Mapping[str, str]) -> Engine:
    """`vllm` (engine image) or `sim` (control-plane image); unset means `vllm`."""
    value = env.get(ENV_ENGINE, "").strip() or "vllm"
    if value not in ENGINES:
        raise PodEnvError(f"{ENV_ENGINE}={value!r}: must be one of {', '.join(ENGINES)}")
    return value


def launch_config_path(env: Mapping[str, str]) -> str:
    return env.get(ENV_LAUNCH_CONFIG, "").strip() or DEFAULT_LAUNCH_CONFIG
