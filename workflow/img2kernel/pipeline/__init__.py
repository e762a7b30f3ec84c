"""Workflow plumbing: configuration and schemas, the code files a rule runs, locks, job logs, whole-file writes."""
