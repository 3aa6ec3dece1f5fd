"""Concerns of the running process that every layer shares and none owns: nothing here
knows the domain, the log or the read models."""
