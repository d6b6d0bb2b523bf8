"""The workflow: the path layout, the plan of jobs built from config and disk state,
and what each job runs. Imports no torch: the Snakefile imports it on every parse."""
