"""SEAL domains by name. A new domain is one file beside these plus an entry here and a config."""

from __future__ import annotations


def make_domain(name: str):
    if name == "arc":
        from seal.domains.arc import ArcDomain

        return ArcDomain()
    if name == "knowledge":
        from seal.domains.knowledge import KnowledgeDomain

        return KnowledgeDomain()
    raise ValueError(f"unknown SEAL domain {name!r}; valid: {list(DOMAINS)}")


DOMAINS = ("arc", "knowledge")
