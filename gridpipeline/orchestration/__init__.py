"""Partitions, resources, sensors and shared checks: the Dagster side that every domain uses."""
