"""Moved to `clearclass.run_folder`, where the readers of a run's files are too."""

# TEMPORARY: removed when the loop moves (issue 22)
from clearclass.run_folder import *  # noqa: F403
from clearclass.run_folder import (  # noqa: F401
    RUN_FILES,
    check_run_dir,
    resuming,
    run_dir_for,
    run_folder,
    run_name,
    run_path,
)
