"""llmboard: reproducible LLM leaderboards as a Snakemake workflow.

Importing the package is cheap on purpose (no torch): the Snakefile imports it
to resolve configuration, and every cluster job re-parses the Snakefile.
"""

__version__ = "0.1.0"
