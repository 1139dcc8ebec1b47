"""The native KaniTTS engine: our own LFM2 forward, a static slot pool, continuous batching,
a codebook-only head with on-device sampling, and CUDA graphs per batch bucket.

``spec`` (config.json) -> ``weights`` (safetensors) -> ``model`` (forward) -> ``slots``
(per-slot state) -> ``sampler`` -> ``graphs`` (decode step + capture) -> ``scheduler``
(worker thread) -> ``backend`` (the GenerationBackend). Needs torch and safetensors only.
``kanitts2`` adds KaniTTS-2 checkpoints (speaker row, frame-level positions, learnable RoPE).
"""
