"""Environment basics: registration, scanning, modules, factories, interfaces, parents."""

from __future__ import annotations

import threading

import pytest

from aspyx_di import (
    AmbiguousDependencyError,
    DecoratorError,
    Environment,
    UnresolvableTypeError,
    create,
    injectable,
    module,
)
from tests.fixtures import factories, interfaces, scan, shop
from tests.fixtures.child import ChildModule, ChildService
from tests.fixtures.isolation import ImportingModule, UsesOther
from tests.fixtures.lifecycle import Lazy, LifecycleModule, events
from tests.fixtures.other import OtherModule, OtherService
from tests.fixtures.parent import ParentModule, SharedRepository
from tests.fixtures.scan._private import Hidden
from tests.fixtures.scan.sub.deeper.leaf import Leaf
from tests.fixtures.scan.top import Top


def test_constructor_parameters_are_injected_by_type_hints() -> None:
    environment = Environment(shop.ShopModule)
    controller = environment.get(shop.Controller)
    assert controller.checkout("book") == "order book"
    assert controller.service is environment.get(shop.Service)
    assert controller.service.repository is environment.get(shop.Repository)


def test_classes_without_own_init_are_injectable() -> None:
    environment = Environment(shop.ShopModule)
    assert isinstance(environment.get(shop.Clock), shop.Clock)
    assert environment.get(shop.Audit).repository is environment.get(shop.Repository)


def test_injector_and_environment_return_the_same_instances() -> None:
    environment = Environment(shop.ShopModule)
    assert environment.injector is not None
    assert environment.injector.get(shop.Controller) is environment.get(shop.Controller)
    assert environment.injector.get(Environment) is environment


def test_the_module_is_itself_a_bean() -> None:
    environment = Environment(shop.ShopModule)
    assert isinstance(environment.get(shop.ShopModule), shop.ShopModule)


def test_subpackages_are_scanned_but_private_modules_are_not() -> None:
    environment = Environment(scan.ScanModule)
    assert environment.get(Leaf).top is environment.get(Top)
    with pytest.raises(UnresolvableTypeError, match="Hidden"):
        environment.get(Hidden)


def test_imports_add_the_other_modules_registrations() -> None:
    environment = Environment(ImportingModule)
    assert environment.get(UsesOther).other is environment.get(OtherService)


def test_environments_of_different_modules_do_not_see_each_other() -> None:
    first = Environment(OtherModule)
    second = Environment(shop.ShopModule)
    with pytest.raises(UnresolvableTypeError):
        second.get(OtherService)
    with pytest.raises(UnresolvableTypeError):
        first.get(shop.Controller)
    assert Environment(OtherModule).get(OtherService) is not first.get(OtherService)


def test_factory_and_create_methods_provide_their_products() -> None:
    environment = Environment(factories.FactoryModule)
    connection = environment.get(factories.Connection)
    assert connection.url == "db://local"
    assert environment.get(factories.Pool).connection is connection
    assert environment.get(factories.Session) is not environment.get(factories.Session)


def test_base_class_resolves_to_its_single_implementation() -> None:
    environment = Environment(interfaces.InterfaceModule)
    assert environment.get(interfaces.Greeter) is environment.get(interfaces.EnglishGreeter)


def test_protocol_resolves_structurally() -> None:
    environment = Environment(interfaces.InterfaceModule)
    assert environment.get(interfaces.Store) is environment.get(interfaces.FileStore)  # type: ignore[type-abstract]


def test_ambiguous_base_class_lists_the_candidates() -> None:
    environment = Environment(interfaces.InterfaceModule)
    with pytest.raises(AmbiguousDependencyError) as caught:
        environment.get(interfaces.Notifier)  # type: ignore[type-abstract]
    message = str(caught.value)
    assert "MailNotifier" in message and "SmsNotifier" in message and "Hint:" in message
    assert isinstance(caught.value, LookupError)


def test_list_injection_gets_every_implementation() -> None:
    environment = Environment(interfaces.InterfaceModule)
    broadcaster = environment.get(interfaces.Broadcaster)
    assert sorted(n.notify() for n in broadcaster.notifiers) == ["mail", "sms"]
    assert environment.get(list[interfaces.Notifier]) == broadcaster.notifiers
    assert environment.injector is not None
    assert environment.injector.get(list[interfaces.Notifier]) == broadcaster.notifiers


def test_child_environment_resolves_from_its_parent_and_shares_singletons() -> None:
    parent = Environment(ParentModule)
    child = Environment(ChildModule, parent=parent)
    assert child.get(ChildService).repository is parent.get(SharedRepository)
    assert child.get(SharedRepository) is parent.get(SharedRepository)
    assert child.injector is not None
    assert child.injector.get(SharedRepository) is parent.get(SharedRepository)
    with pytest.raises(UnresolvableTypeError):
        parent.get(ChildService)


def test_overrides_replace_a_bean_for_tests() -> None:
    class FakeRepository(shop.Repository):
        def find(self, item: str) -> str:
            return f"fake {item}"

    environment = Environment(shop.ShopModule, overrides={shop.Repository: FakeRepository()})
    assert environment.get(shop.Controller).checkout("pen") == "order fake pen"
    by_class = Environment(shop.ShopModule, overrides={shop.Repository: FakeRepository})
    assert isinstance(by_class.get(shop.Service).repository, FakeRepository)


def test_decorating_a_non_class_raises_at_decoration_time() -> None:
    with pytest.raises(DecoratorError, match="decorates classes"):
        injectable()(lambda: None)  # type: ignore[type-var]
    with pytest.raises(DecoratorError, match="not a @module"):

        @module(imports=[shop.Repository])
        class Bad:
            pass


def test_concurrent_gets_create_each_singleton_exactly_once() -> None:
    environment = Environment(LifecycleModule)
    events.clear()
    barrier = threading.Barrier(16)
    results: list[Lazy] = []

    def work() -> None:
        barrier.wait()
        results.append(environment.get(Lazy))

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert events.count("Lazy()") == 1
    assert len({id(r) for r in results}) == 1
    environment.shutdown()


class Token:
    pass


def test_a_module_defined_inside_a_function_is_registered_with_its_create_methods() -> None:
    @module()
    class LocalModule:
        @create()
        def token(self) -> Token:
            return Token()

    environment = Environment(LocalModule)
    assert isinstance(environment.get(Token), Token)
    assert isinstance(environment.get(LocalModule), LocalModule)


def test_beans_of_a_module_run_with_python_dash_m_are_registered() -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "tests.fixtures.mainrun.app"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "registered from __main__"
