"""aspyx_di: dependency injection for microservices, built on injector, with a fast path.

Decorators describe beans (`@injectable`, `@factory`, `@module`, `@create`, lifecycle and
injection hooks); an `Environment` built from a `@module()` class collects, validates and
creates them.
"""

from .conditions import (
    Condition,
    ConditionContext,
    requires_class,
    requires_configuration_value,
    requires_feature,
)
from .configuration import (
    ConfigurationManager,
    ConfigurationSource,
    DictSource,
    EnvironmentSource,
    YamlSource,
)
from .decorators import (
    Factory,
    PostProcessor,
    conditional,
    create,
    factory,
    inject,
    inject_environment,
    inject_value,
    injectable,
    module,
    on_destroy,
    on_init,
    on_running,
)
from .environment import Environment
from .errors import (
    AmbiguousDependencyError,
    ConfigurationError,
    CyclicDependencyError,
    DecoratorError,
    DIError,
    LifecycleError,
    MissingConfigurationError,
    MissingDependencyError,
    ScopeError,
    UnresolvableTypeError,
)
from .scopes import ContextScope, RequestScope, Scope, ThreadScope

__all__ = [
    "AmbiguousDependencyError",
    "Condition",
    "ConditionContext",
    "ConfigurationError",
    "ConfigurationManager",
    "ConfigurationSource",
    "ContextScope",
    "CyclicDependencyError",
    "DIError",
    "DecoratorError",
    "DictSource",
    "Environment",
    "EnvironmentSource",
    "Factory",
    "LifecycleError",
    "MissingConfigurationError",
    "MissingDependencyError",
    "PostProcessor",
    "RequestScope",
    "Scope",
    "ScopeError",
    "ThreadScope",
    "UnresolvableTypeError",
    "YamlSource",
    "conditional",
    "create",
    "factory",
    "inject",
    "inject_environment",
    "inject_value",
    "injectable",
    "module",
    "on_destroy",
    "on_init",
    "on_running",
    "requires_class",
    "requires_configuration_value",
    "requires_feature",
]
