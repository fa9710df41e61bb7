"""The running G-Chat version, read from the installed package's metadata.

One source (``pyproject.toml``'s ``version``), shown by ``gchat --version``,
the start-up banner, the ``gchat_build_info`` metric and backups' manifests.
"""

from importlib import metadata


def version() -> str:
    """The installed version, or ``0+unknown`` when run from an uninstalled tree."""
    try:
        return metadata.version("gchat")
    except metadata.PackageNotFoundError:
        return "0+unknown"
