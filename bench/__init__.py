"""Benchmarks of files_app (``bench/run.py``) and of its storage (``bench/storage_memory.py``)."""
