"""The bureau's persistent registry of linked entities: SQLite by default, PostgreSQL by URL.

Import from here: ``from pprl.registry import Registry``. Design: docs/registry.md.
"""

from pprl.registry.store import FORMAT, Registry, RegistryStats, UpdateReport, registry_url, sqlite_pragmas

__all__ = ["FORMAT", "Registry", "RegistryStats", "UpdateReport", "registry_url", "sqlite_pragmas"]
