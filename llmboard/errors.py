"""The errors that are a user's mistake (a config, task, source or plan that cannot be
used). Their messages name the file and field, so the CLI and the Snakefile print them
without a Python stack; anything else is a bug and keeps its traceback."""

from .checkpoints.sources import SourceError
from .inference.memory_plan import PlanDoesNotFit
from .results.board_statistics import StatisticsError
from .settings import SettingsError
from .tasks.errors import TaskError

USER_ERRORS = (SettingsError, TaskError, SourceError, PlanDoesNotFit, StatisticsError)
