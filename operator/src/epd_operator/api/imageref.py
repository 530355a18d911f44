"""Container image references: the grammar of distribution/reference (what the kubelet and
every registry client parse), as one regular expression usable in the CRD schema (Go RE2) and
in pydantic (Rust regex) alike.

The apiserver itself only refuses leading/trailing whitespace in `image`; a reference it lets
through but no runtime can pull (a space inside, `repo:tag:tag`, upper-case path) leaves pods
in InvalidImageName forever, so the EPDCluster schema checks the full grammar up front.

    reference := name [ ":" tag ] [ "@" digest ]
    name      := [ domain "/" ] path-component ( "/" path-component )*
    domain    := host [ ":" port ]          host: DNS labels (any case), IPv4 or [IPv6]
    path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag       := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest    := algorithm ":" hex{32,}
    algorithm := [A-Za-z][A-Za-z0-9]* ( [+._-] [A-Za-z][A-Za-z0-9]* )*
"""

from __future__ import annotations

import re
from typing import Final

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
# The first component is a domain only when it looks like one (has '.', ':' or is localhost),
# as the reference parser decides; the regex accepts both readings, which is what matters here.
NAME_PATTERN_BODY: Final = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
# ASCII classes, not \w: RE2 (the CRD schema) reads \w as ASCII, Python's re and Rust's regex
# (pydantic) as Unicode, so `\w` let "tág" past pydantic that the apiserver refuses; and
# Rust's Unicode \w repeated 128 times compiles to megabytes per model that embeds the field.
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

REPOSITORY_PATTERN: Final = rf"^{NAME_PATTERN_BODY}$"
"""A repository (name without tag or digest)."""
REFERENCE_PATTERN: Final = rf"^{NAME_PATTERN_BODY}(?::{_TAG})?(?:@{_DIGEST})?$"
"""A full reference: repository, optional tag, optional digest."""
TAG_PATTERN: Final = rf"^{_TAG}$"

IMAGE_REF_PROBLEM: Final = (
    "not a valid image reference ([registry/]repository[:tag][@digest]; lower-case path, no "
    "whitespace)"
)
_REFERENCE = re.compile(REFERENCE_PATTERN)
MAX_NAME = 255


def check_reference(ref: str) -> str | None:
    """Why `ref` is not a pullable image reference, or None when it is."""
    if ref != ref.strip():
        return "must not have leading or trailing whitespace"
    if _REFERENCE.match(ref) is None:
        return f"is {IMAGE_REF_PROBLEM}"
    name = ref.split("@", 1)[0]
    slash = name.rfind("/")
    if name.rfind(":") > slash:
        name = name[: name.rfind(":")]
    if len(name) > MAX_NAME:
        return f"repository name longer than {MAX_NAME} characters"
    return None
