"""The dbt project, in a module of its own so ``dagster-dbt project prepare-and-package`` can load it
without importing the rest of the code location."""

from pathlib import Path

from dagster_dbt import DbtProject

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
dbt_project.prepare_if_dev()
if not dbt_project.manifest_path.exists():
    # A fresh clone run outside `dagster dev` (pytest, the CLI): parse once so definitions load.
    dbt_project.preparer.prepare(dbt_project)
