"""The log and what moves on it: topics, codecs, the embedded log, sources, the runner."""
