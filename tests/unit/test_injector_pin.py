"""The injector internals aspyx_di relies on. If an injector upgrade breaks this, fix
`Environment._build_injector` before widening the version range in pyproject.toml."""

from __future__ import annotations

import injector


def test_binder_keeps_bindings_in_a_dict_of_binding_objects() -> None:
    class Thing:
        pass

    thing = Thing()

    class Answer(injector.Provider):  # type: ignore[misc]
        def get(self, _injector: injector.Injector) -> Thing:
            return thing

    def configure(binder: injector.Binder) -> None:
        assert isinstance(binder._bindings, dict)
        binder._bindings[Thing] = injector.Binding(Thing, Answer(), injector.NoScope)
        many = list[Thing]
        binder._bindings[many] = injector.Binding(many, Answer(), injector.NoScope)

    parent = injector.Injector([configure], auto_bind=False)
    assert parent.get(Thing) is thing
    child = parent.create_child_injector([], auto_bind=False)
    assert child.get(Thing) is thing, "a child injector must fall back to its parent's bindings"
    assert parent.binder.has_explicit_binding_for(Thing)
    assert injector.Binding.__dataclass_fields__.keys() >= {"interface", "provider", "scope"}
