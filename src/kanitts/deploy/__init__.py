"""Deployments beyond one process: Ray Serve (:mod:`kanitts.deploy.ray`).

Kubernetes manifests live in ``deploy/kubernetes/`` and the Ray Serve config in
``deploy/ray/serve_config.yaml``; ``docs/scaling.md`` explains the routes.
"""

from __future__ import annotations

from typing import Any


def settings_to_dict(settings: Any) -> dict[str, Any]:
    """A JSON-able copy of ``settings`` for one replica of a multi-host deployment:
    one engine per replica (the orchestrator gives each replica its GPU)."""
    data = settings.model_dump(mode="json")
    data["engine"]["data_parallel_size"] = 1
    data["engine"]["gpus"] = None
    return data


def settings_from_dict(data: dict[str, Any]) -> Any:
    """Rebuild :class:`kanitts.config.Settings` from :func:`settings_to_dict` output.
    The values given win over ``KANITTS_*`` variables of the replica's host."""
    from kanitts.config import ConfigError, Settings

    try:
        return Settings(**data)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"invalid settings for a replica: {exc}") from None
