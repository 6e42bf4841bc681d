"""output-service: a results sink for distributed ping and traceroute measurement."""

__version__ = "2.0.0"
