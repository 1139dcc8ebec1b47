"""Ray Serve deployment: the same OpenAI-compatible app, one replica per GPU, across hosts.

Each Serve replica is one actor holding one GPU (``ray_actor_options={"num_gpus": 1}``;
Ray sets its ``CUDA_VISIBLE_DEVICES``) and runs the whole kanitts app in it: engine,
codec, synthesis, encoders, and the FastAPI routes (``create_app``) as the replica's
ASGI ingress. Ray Serve's HTTP proxy on every node forwards requests (streaming bodies
included) to replicas; Serve's router picks the replica (power of two choices on
ongoing requests), its autoscaler adds and removes replicas on ongoing requests, and its
controller replaces a replica whose actor dies or whose ``check_health`` fails. There is
no load balancer of ours here.

Run it::

    serve run kanitts.deploy.ray:app_builder config=/etc/kanitts/kanitts.toml
    serve deploy deploy/ray/serve_config.yaml           # on a running Ray cluster

``app_builder`` arguments (strings on the ``serve run`` command line, any JSON type in a
config file's ``args``):

==========================  ===============================================================
``config``                  kanitts TOML file (else ``KANITTS_CONFIG`` / env / defaults)
``num_replicas``            fixed replica count (default 1) - ignored when autoscaling
``min_replicas``            autoscaling lower bound (autoscaling is on when min or max is given)
``max_replicas``            autoscaling upper bound
``initial_replicas``        autoscaling start value
``target_ongoing_requests`` autoscaling target per replica (default: half of max_ongoing)
``max_ongoing_requests``    requests one replica accepts at once (default: server.max_concurrent, or the engines' capacity)
``num_gpus``                GPUs per replica (default 1 when the engine device is not cpu, else 0)
``num_cpus``                CPUs per replica (default 1)
``name``                    deployment name (default ``KaniTTS``)
``health_check_period_s``   default 10
``health_check_timeout_s``  default 30
==========================  ===============================================================
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve

from kanitts.deploy import settings_from_dict, settings_to_dict

logger = logging.getLogger(__name__)

REPLICA_HEADER = "X-Kanitts-Replica"


class KaniTTSServer:
    """One Serve replica: a started :class:`~kanitts.service.TTSService` and its app."""

    async def __init__(self, settings_data: dict[str, Any]) -> None:
        from kanitts.service import TTSService

        self.settings = settings_from_dict(settings_data)
        try:
            ctx = serve.get_replica_context()
            self.replica_id = str(ctx.replica_id.unique_id)
        except Exception:  # noqa: BLE001 - outside Serve (unit use)
            self.replica_id = "local"
        self.service = TTSService(self.settings)
        # Load models in the constructor: Serve routes traffic to a replica only once
        # it is constructed, so a loading replica never gets requests.
        await self.service.start()
        logger.info("kanitts replica %s ready", self.replica_id)

    def __serve_build_asgi_app__(self) -> Any:
        from kanitts.server.app import create_app

        app = create_app(self.settings, service=self.service)
        replica_id = self.replica_id

        @app.middleware("http")
        async def tag_replica(request: Any, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers[REPLICA_HEADER] = replica_id
            return response

        return app

    async def check_health(self) -> None:
        """Serve calls this every ``health_check_period_s``; raising marks the replica
        unhealthy and Serve replaces it."""
        svc = self.service
        if not svc.ready:
            raise RuntimeError(f"kanitts service not ready: {svc.error or 'loading'}")
        for code, m in svc.models.items():
            if not m.backend.ready:
                raise RuntimeError(f"engine for {code} ({m.model_id}) is not ready")


#: The deployment (options are set per application by :func:`app_builder`).
KaniTTSDeployment = serve.deployment(name="KaniTTS")(serve.ingress()(KaniTTSServer))


def _num(args: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    v = args.get(key)
    if v is None or v == "":
        return default
    try:
        return kind(v)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected {kind.__name__}, got {v!r}") from None


def deployment_options(args: dict[str, Any], settings: Any) -> dict[str, Any]:
    """Serve deployment options from ``app_builder`` args (see the module docstring)."""
    known = {
        "config", "num_replicas", "min_replicas", "max_replicas", "initial_replicas",
        "target_ongoing_requests", "max_ongoing_requests", "num_gpus", "num_cpus", "name",
        "health_check_period_s", "health_check_timeout_s",
    }  # fmt: skip
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown app_builder argument(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    cpu_only = str(settings.engine.device) == "cpu"
    from kanitts.models import admission_limit

    max_ongoing = _num(args, "max_ongoing_requests", int, admission_limit(settings))
    opts: dict[str, Any] = {
        "name": str(args.get("name") or "KaniTTS"),
        "max_ongoing_requests": max_ongoing,
        "ray_actor_options": {
            "num_gpus": _num(args, "num_gpus", float, 0.0 if cpu_only else 1.0),
            "num_cpus": _num(args, "num_cpus", float, 1.0),
        },
        "health_check_period_s": _num(args, "health_check_period_s", float, 10.0),
        "health_check_timeout_s": _num(args, "health_check_timeout_s", float, 30.0),
        # A replica may need minutes to load a model and warm the engine up.
        "graceful_shutdown_timeout_s": settings.server.graceful_shutdown_seconds + 5,
    }
    lo = _num(args, "min_replicas", int)
    hi = _num(args, "max_replicas", int)
    if lo is not None or hi is not None:
        lo = 1 if lo is None else lo
        hi = max(lo, 1) if hi is None else hi
        if hi < max(lo, 1):
            raise ValueError(f"max_replicas ({hi}) must be >= min_replicas ({lo}) and >= 1")
        auto: dict[str, Any] = {
            "min_replicas": lo,
            "max_replicas": hi,
            "target_ongoing_requests": _num(args, "target_ongoing_requests", float, max(1.0, max_ongoing / 2)),
            # Model start-up is slow: scale up promptly, scale down reluctantly.
            "upscale_delay_s": 10.0,
            "downscale_delay_s": 300.0,
        }
        init = _num(args, "initial_replicas", int)
        if init is not None:
            auto["initial_replicas"] = init
        opts["autoscaling_config"] = auto
    else:
        opts["num_replicas"] = _num(args, "num_replicas", int, 1)
    return opts


def app_builder(args: dict[str, Any]) -> Any:
    """``serve run kanitts.deploy.ray:app_builder config=kanitts.toml [key=value ...]``."""
    from kanitts.config import load_settings

    args = dict(args or {})
    settings = load_settings(args.get("config"))
    opts = deployment_options(args, settings)
    logger.info("kanitts Ray Serve deployment: %s", opts)
    return KaniTTSDeployment.options(**opts).bind(settings_to_dict(settings))
