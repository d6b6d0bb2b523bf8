"""Checkpoints: where a model comes from (sources), fetching it, converting it to
safetensors, and describing it (manifest)."""
