"""What a utility has, and nothing more: the network model, the weather provider's feeds, and (with
the decision stages) prices and device protocols.

This package is the pipeline's side of the wall between the simulated world and the operator's
pipeline. It reads published files and services, never the world's objects: no module under
``gridpipeline.sources`` (or anything downstream of it) imports ``gridpipeline.world``, and a test
(``gridpipeline_tests/test_wall.py``) fails if one does.
"""
