"""The runner (python -m lib.pipeline.run), the pre-flight check and its service checks."""
