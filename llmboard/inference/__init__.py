"""Inference: the engine (lm-eval's model interface), loading at a precision, memory
plans, GPU slots, and prediction files."""
