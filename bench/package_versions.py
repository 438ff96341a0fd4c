"""The installed version of each package a benchmark compares, for its report header."""

from __future__ import annotations

from importlib import metadata


def package_versions(*names: str) -> dict[str, str]:
    """``{name: version}``, ``"not installed"`` for a package that is missing.

    A benchmark still runs, and says so in its header, when an optional
    contender (hasql, say) is not installed.
    """
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def describe_versions(*names: str) -> str:
    """``"pgrouter 0.1.0, asyncpg 0.32.0, ..."``: one header line."""
    return ", ".join(f"{name} {version}" for name, version in package_versions(*names).items())
