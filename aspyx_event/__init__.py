"""aspyx_event: decorator-driven messaging for microservices, on top of aspyx_di."""
