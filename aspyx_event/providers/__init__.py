"""Providers: the transports behind the EventManager, chosen by URL."""
