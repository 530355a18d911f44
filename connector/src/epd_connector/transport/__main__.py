"""`python -m epd_connector.transport`: the transport preflight as a command (prints JSON)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from .engine import preflight


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m epd_connector.transport",
        description="Check that the Mooncake transfer engine starts and moves bytes on this host.",
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("VLLM_HOST_IP") or os.environ.get("POD_IP") or "127.0.0.1",
        help="address the engine advertises (default: $VLLM_HOST_IP, $POD_IP, 127.0.0.1)",
    )
    parser.add_argument("--protocol", default="tcp", choices=["tcp", "rdma"])
    parser.add_argument("--bytes", type=int, default=1 << 20, help="payload size (default 1 MiB)")
    args = parser.parse_args(argv)
    result = preflight(args.host, args.protocol, args.bytes)
    print(json.dumps(dataclasses.asdict(result)))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
