"""Run the shipped Argo CD health script (gitops/argocd/health.lua) on an object, with lupa.

Argo CD runs a health script with the live object in the global `obj` and reads back a table
`{status = ..., message = ...}`; this does the same with a real Lua interpreter, so tests can
feed it status objects the operator really produced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lupa import LuaRuntime

from e2e.paths import REPO

SCRIPT = REPO / "gitops" / "argocd" / "health.lua"


def _to_lua(lua: LuaRuntime, value: Any) -> Any:
    if isinstance(value, Mapping):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


def health(obj: Mapping[str, Any]) -> dict[str, str]:
    """{'status': 'Healthy'|'Progressing'|'Degraded'|..., 'message': ...} for `obj`."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, obj)
    # Argo CD runs the script as a chunk whose `return hs` is the result.
    result = lua.execute(SCRIPT.read_text())
    return {"status": str(result["status"]), "message": str(result["message"] or "")}
