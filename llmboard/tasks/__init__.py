"""Tasks as data: definitions (YAML), their documents, prompts, filters, metrics and
scoring. Imports neither torch nor ``datasets`` at import time."""
