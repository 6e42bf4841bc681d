"""Operator tools run from the command line (`output-service TOOL ...`)."""
