"""A Flask application that enqueues jobs and mounts the dashboard behind its own login (see app.py)."""
