"""Configuration: typed values from environment variables, YAML files and dicts."""

from .manager import ConfigurationManager
from .sources import ConfigurationSource, DictSource, EnvironmentSource, YamlSource

__all__ = [
    "ConfigurationManager",
    "ConfigurationSource",
    "DictSource",
    "EnvironmentSource",
    "YamlSource",
]
