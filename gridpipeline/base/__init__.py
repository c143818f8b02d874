"""What every domain's assets build on: the time partitions and the metadata helpers (tables, plots).

It imports no domain, so any domain may use it; the wiring that imports the domains (sensors, jobs,
replay) lives in :mod:`gridpipeline.orchestration`, at the top of the chain.
"""
