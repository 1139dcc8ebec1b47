"""The one change kanitts makes to vLLM: skip its per-step host sync when no custom logits
processor needs the generated ids (see :func:`patch_vllm_output_token_sync`)."""

from __future__ import annotations

import os
from typing import Any

_PATCHED = False


def _needs_tokens(proc: Any) -> bool:
    fn = getattr(proc, "needs_output_token_ids", None)
    return True if fn is None else bool(fn())


def patch_vllm_output_token_sync() -> bool:
    """Let vLLM skip its per-step host sync when no logits processor needs real output ids.

    vLLM 0.26 marks *every* custom logits processor as needing the generated token ids
    (``InputBatch.logitsprocs_need_output_token_ids = bool(custom_logitsprocs)``). Under
    async scheduling those ids are ``-1`` placeholders, so before sampling each step vLLM
    waits for the previous step's token copy to reach the host
    (``update_async_output_token_ids`` -> ``async_copy_ready_event.synchronize()``).
    The ``sample`` mode keeps its state on the GPU and never reads them; this wraps
    ``InputBatch._make_sampling_metadata`` (rebuilt on every batch change, right after the
    processors' ``update_state``) so that the flag is the OR of each custom processor's
    ``needs_output_token_ids()`` (True for processors without that method: vLLM's own
    conservative rule). Called in the engine process; ``KANITTS_LP_KEEP_SYNC=1`` disables it.
    """
    global _PATCHED
    if _PATCHED:
        return True
    if os.environ.get("KANITTS_LP_KEEP_SYNC", "") == "1":
        return False
    try:
        from vllm.v1.worker import gpu_input_batch as gib  # type: ignore

        ib_cls = gib.InputBatch
        orig = ib_cls._make_sampling_metadata
    except Exception:  # noqa: BLE001 - vLLM absent or moved: keep its default
        return False

    def _make_sampling_metadata(self: Any) -> Any:
        procs = getattr(self, "logitsprocs", None)
        custom = [p for p in (getattr(procs, "all", None) or [])
                  if not type(p).__module__.startswith("vllm.")]
        if custom:
            self.logitsprocs_need_output_token_ids = any(_needs_tokens(p) for p in custom)
        return orig(self)

    ib_cls._make_sampling_metadata = _make_sampling_metadata
    _PATCHED = True
    return True
