"""Scopes: request, thread, context (with destroy hooks on exit) and custom ones."""

from __future__ import annotations

import contextvars
import gc
import threading
import weakref

import pytest

from aspyx_di import DecoratorError, Environment, ScopeError
from tests.fixtures import scoped


def test_request_scope_makes_a_new_instance_each_time_and_keeps_none() -> None:
    environment = Environment(scoped.ScopedModule, scopes={"tenant": scoped.TenantScope()})
    first = environment.get(scoped.PerRequest)
    assert environment.get(scoped.PerRequest) is not first
    reference = weakref.ref(first)
    del first
    gc.collect()
    assert reference() is None, "the environment must not retain request-scoped objects"


def test_thread_scope_is_per_thread() -> None:
    environment = Environment(scoped.ScopedModule, scopes={"tenant": scoped.TenantScope()})
    here = environment.get(scoped.PerThread)
    assert environment.get(scoped.PerThread) is here
    elsewhere: list[scoped.PerThread] = []
    thread = threading.Thread(target=lambda: elsewhere.append(environment.get(scoped.PerThread)))
    thread.start()
    thread.join()
    assert elsewhere[0] is not here


def test_context_scope_lives_for_one_context_and_destroys_on_exit() -> None:
    environment = Environment(scoped.ScopedModule, scopes={"tenant": scoped.TenantScope()})
    scoped.destroyed.clear()
    with environment.context():
        transaction = environment.get(scoped.Transaction)
        transaction.context.user = "ann"
        assert environment.get(scoped.RequestContext) is transaction.context
    assert scoped.destroyed == ["transaction", "context:ann"]  # newest first
    with environment.context():
        assert environment.get(scoped.RequestContext).user == ""


def test_context_scope_outside_a_context_is_a_clear_error() -> None:
    environment = Environment(scoped.ScopedModule, scopes={"tenant": scoped.TenantScope()})
    with pytest.raises(ScopeError, match="no context is active"):
        environment.get(scoped.RequestContext)


def test_contexts_in_separate_contextvars_contexts_are_separate() -> None:
    environment = Environment(scoped.ScopedModule, scopes={"tenant": scoped.TenantScope()})

    def user_seen(name: str) -> str:
        with environment.context():
            environment.get(scoped.RequestContext).user = name
            return environment.get(scoped.RequestContext).user

    assert contextvars.copy_context().run(user_seen, "a") == "a"
    assert contextvars.copy_context().run(user_seen, "b") == "b"


def test_custom_scope_registered_by_name() -> None:
    tenants = scoped.TenantScope()
    environment = Environment(scoped.ScopedModule, scopes={"tenant": tenants})
    a = environment.get(scoped.TenantData)
    assert environment.get(scoped.TenantData) is a
    tenants.tenant = "b"
    assert environment.get(scoped.TenantData) is not a


def test_unknown_scope_name_is_reported_at_build() -> None:
    with pytest.raises(DecoratorError, match="unknown scope 'tenant'"):
        Environment(scoped.ScopedModule)
