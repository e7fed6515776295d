"""A FastAPI application that enqueues with aenqueue and mounts the dashboard behind its own check (see app.py)."""
