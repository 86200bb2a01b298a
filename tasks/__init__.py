"""Prefect tasks of brandforge, one module per stage of the pipeline."""
