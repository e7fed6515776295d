"""Runnable examples (not installed with the package); `-r examples.legacy_jobs` from the repository root."""
