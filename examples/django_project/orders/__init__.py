"""Orders: a view and a command place orders; a job ships each one after its transaction commits."""
