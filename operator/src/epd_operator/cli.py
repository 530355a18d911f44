"""`epdctl`: preview what the operator does with an EPDCluster, without a cluster.

    epdctl render -f epdcluster.yaml                 the manifests the operator would apply
    epdctl render -f x.yaml --pod decode/0 --pod-ip 10.0.0.7
                                                     the argv (and env) that pod would exec
    epdctl crds [--write]                            the generated CRDs (or rewrite crds/)
    epdctl autoscale -f x.yaml [--role decode] [--keda]
                                                     an HPA (or KEDA ScaledObject) per role

Invalid input exits with code 2 and a message naming the field. Output goes to stdout (this
is a CLI); diagnostics to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from epd_connector.launch.argv import build_argv, build_env
from epd_connector.launch.config import LaunchConfigError
from epd_connector.launch.pod import PodContext
from epd_connector.launch.store import store_files

from .api import constants as c
from .api import crdgen
from .api.models import EPDCluster
from .api.operator_config import OperatorConfig, OperatorConfigError
from .api.parse import SpecError, parse
from .render import render_cluster
from .render.autoscale import RecipeError, Targets, recipes
from .render.launch import launch_config
from .render.names import role_name

EXIT_INVALID = 2
# ownerReferences need a uid, which only the apiserver assigns: previews use this one.
PREVIEW_UID = "00000000-0000-0000-0000-000000000000"


class CLIError(Exception):
    """Bad input: printed as `epdctl: <message>`, exit code 2."""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    # Multi-line strings (the launch config JSON) as literal blocks, readable in a diff.
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def dump_yaml_stream(objects: Sequence[dict[str, Any]]) -> str:
    return "".join(
        "---\n" + yaml.dump(o, Dumper=_Dumper, sort_keys=False, width=100) for o in objects
    )


def load_clusters(path: str, namespace: str | None) -> list[EPDCluster]:
    """Every EPDCluster document in a YAML file ('-' = stdin), parsed and checked."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise CLIError(f"{path}: not valid YAML: {exc}") from exc
    clusters = []
    for i, doc in enumerate(docs):
        if isinstance(doc, dict) and doc.get("kind") not in (None, c.KIND):
            continue  # other objects in the same file (a PVC, a Secret) are not ours
        obj = dict(doc) if isinstance(doc, dict) else doc
        if isinstance(obj, dict):
            meta = dict(obj.get("metadata") or {})
            meta.setdefault("uid", PREVIEW_UID)
            if namespace is not None:
                meta["namespace"] = namespace
            obj["metadata"] = meta
        try:
            clusters.append(parse(obj))
        except SpecError as exc:
            where = f"{path}" + (f" (document {i + 1})" if len(docs) > 1 else "")
            raise CLIError(f"{where}: {exc}") from exc
    if not clusters:
        raise CLIError(f"{path}: no {c.KIND} found")
    return clusters


def _pod_preview(cluster: EPDCluster, pod: str, pod_ip: str) -> dict[str, Any]:
    role, sep, ordinal = pod.partition("/")
    if not sep or not ordinal.isdigit():
        raise CLIError(f"--pod: expected ROLE/ORDINAL (e.g. decode/0), got {pod!r}")
    config = launch_config(cluster)
    if role not in config.present_roles():
        raise CLIError(
            f"--pod: {cluster.metadata.name} has no role {role!r} "
            f"(roles: {', '.join(config.present_roles())})"
        )
    replicas = config.role(role).replicas
    if int(ordinal) >= replicas:
        raise CLIError(f"--pod: {role} has {replicas} replica(s); ordinal {ordinal} does not exist")
    env = {
        c.ENV_ROLE: role,
        c.ENV_POD_IP: pod_ip,
        c.ENV_POD_NAME: f"{role_name(cluster.metadata.name, role)}-{ordinal}",
        c.ENV_POD_NAMESPACE: cluster.metadata.namespace,
    }
    # The preview runs the launcher's own code, from the environment the pod would have.
    try:
        ctx = PodContext.from_env(env)
        argv = build_argv(config, role, ctx)
        extra_env = build_env(config, role, ctx)
        files = store_files(config, role, ctx)
    except LaunchConfigError as exc:
        raise CLIError(f"--pod {pod}: {exc}") from exc
    out: dict[str, Any] = {"pod": env[c.ENV_POD_NAME], "argv": argv, "env": extra_env}
    if files:
        # What epd-engine writes before exec (the Mooncake Store config), parsed for reading.
        out["files"] = {path: json.loads(text) for path, text in files.items()}
    return out


def _cmd_render(args: argparse.Namespace, out: TextIO) -> int:
    try:
        cfg = OperatorConfig.from_env()
    except OperatorConfigError as exc:
        raise CLIError(str(exc)) from exc
    clusters = load_clusters(args.file, args.namespace)
    if args.pod is not None:
        if args.pod_ip is None:
            raise CLIError("--pod needs --pod-ip")
        if len(clusters) != 1:
            raise CLIError(f"--pod needs exactly one {c.KIND} in {args.file}")
        preview = _pod_preview(clusters[0], args.pod, args.pod_ip)
        out.write(json.dumps(preview, indent=2) + "\n")
        return 0
    manifests = [m for cluster in clusters for m in render_cluster(cluster, cfg)]
    out.write(dump_yaml_stream(manifests))
    return 0


def _cmd_crds(args: argparse.Namespace, out: TextIO) -> int:
    if args.write:
        for path in crdgen.write(args.root or crdgen.repo_root()):
            out.write(f"wrote {path}\n")
    else:
        out.write(crdgen.render_all_yaml())
    return 0


def _cmd_autoscale(args: argparse.Namespace, out: TextIO) -> int:
    clusters = load_clusters(args.file, args.namespace)
    t = Targets(
        waiting_per_pod=args.waiting_per_pod,
        kv_cache_usage=args.kv_cache_usage,
        encode_p90_seconds=args.encode_p90_seconds,
        default_max_replicas=args.max_replicas,
        prometheus_url=args.prometheus_url,
    )
    manifests: list[dict[str, Any]] = []
    for cluster in clusters:
        try:
            manifests += recipes(cluster, args.role or None, keda=args.keda, t=t)
        except RecipeError as exc:
            raise CLIError(str(exc)) from exc
    out.write(dump_yaml_stream(manifests))
    return 0


def _autoscale_parser(sub: Any) -> None:
    """`epdctl autoscale` and its targets (defaults: autoscale.Targets)."""
    auto = sub.add_parser(
        "autoscale",
        help="print an HPA (or KEDA ScaledObject) per Scaler-owned role",
        description="Print one autoscaler per role of the EPDCluster(s) in FILE whose "
        "replicasFrom is Scaler, aimed at the role's EPDRoleScaler: HPA autoscaling/v2 on the "
        "metric names of the Prometheus Adapter rules in docs/autoscaling.md, or with --keda "
        "a ScaledObject querying Prometheus. Bounds come from the role's min/maxReplicas.",
    )
    auto.add_argument("-f", "--file", required=True, help="EPDCluster YAML ('-' = stdin)")
    auto.add_argument("-n", "--namespace", help="namespace (default: the file's, or default)")
    auto.add_argument(
        "--role",
        action="append",
        choices=c.ROLE_NAMES,
        help="only this role (repeatable; default: every Scaler-owned role)",
    )
    auto.add_argument("--keda", action="store_true", help="KEDA ScaledObjects instead of HPAs")
    defaults = Targets()
    auto.add_argument(
        "--waiting-per-pod",
        default=defaults.waiting_per_pod,
        help="prefill/decode: vllm:num_requests_waiting per pod (default %(default)s)",
    )
    auto.add_argument(
        "--kv-cache-usage",
        default=defaults.kv_cache_usage,
        help="decode: vllm:kv_cache_usage_perc per pod (default %(default)s)",
    )
    auto.add_argument(
        "--encode-p90-seconds",
        default=defaults.encode_p90_seconds,
        help="encoder: the router's p90 encode-stage seconds (default %(default)s)",
    )
    auto.add_argument(
        "--max-replicas",
        type=int,
        default=defaults.default_max_replicas,
        help="for roles without maxReplicas (default %(default)s)",
    )
    auto.add_argument(
        "--prometheus-url",
        default=defaults.prometheus_url,
        help="KEDA: Prometheus address (default %(default)s)",
    )
    auto.set_defaults(func=_cmd_autoscale)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="epdctl", description="Preview what epd-operator does with an EPDCluster."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser(
        "render",
        help="print the manifests (or one pod's argv) for an EPDCluster file",
        description="Print the objects the operator would apply for the EPDCluster(s) in FILE, "
        "as a YAML stream. Operator settings come from EPD_OPERATOR_* variables.",
    )
    render.add_argument("-f", "--file", required=True, help="EPDCluster YAML ('-' = stdin)")
    render.add_argument("-n", "--namespace", help="namespace (default: the file's, or default)")
    render.add_argument("--pod", metavar="ROLE/ORDINAL", help="print this pod's argv and env")
    render.add_argument("--pod-ip", metavar="IP", help="the pod IP to assume with --pod")
    render.set_defaults(func=_cmd_render)
    crds = sub.add_parser("crds", help="print the CRDs, or write crds/ with --write")
    crds.add_argument("--write", action="store_true", help="rewrite crds/ and the chart's copy")
    crds.add_argument("--root", type=Path, help="repository root for --write")
    crds.set_defaults(func=_cmd_crds)
    _autoscale_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args, out or sys.stdout)
    except CLIError as exc:
        sys.stderr.write(f"epdctl: {exc}\n")
        return EXIT_INVALID
    return code


if __name__ == "__main__":
    raise SystemExit(main())
