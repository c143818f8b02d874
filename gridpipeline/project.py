"""The dbt project, in a module of its own so ``dagster-dbt project prepare-and-package`` can load it
without importing the rest of the code location."""

from pathlib import Path

from dagster_dbt import DbtProject

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def _manifest_stale() -> bool:
    """True when the manifest is missing or older than any of the dbt project's own files (its models,
    macros and YAML; not what dbt writes: target/, logs/, dbt_packages/)."""
    m = dbt_project.manifest_path
    if not m.exists():
        return True
    t = m.stat().st_mtime
    skip = {"target", "logs", "dbt_packages"}
    return any(p.stat().st_mtime > t for p in DBT_PROJECT_DIR.rglob("*")
               if p.is_file() and not skip & set(p.relative_to(DBT_PROJECT_DIR).parts))


# Under `dagster dev` every process that loads the code location (each run's step workers too) would
# re-parse and queue on the manifest's file lock; a run whose workers started together then failed on
# the lock's timeout. Parse only when the project changed since the manifest was written.
if _manifest_stale():
    dbt_project.prepare_if_dev()
    if not dbt_project.manifest_path.exists():
        # A fresh clone run outside `dagster dev` (pytest, the CLI): parse once so definitions load.
        dbt_project.preparer.prepare(dbt_project)
