"""Integrations with frameworks; each is imported only by projects that use it."""
