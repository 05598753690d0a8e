"""The STOMP destinations of groups and dead-letter queues per broker (no broker needed).

RabbitMQ and ActiveMQ are also checked end to end (test_queues.py); for Artemis, which is not
installable here, this table is the only check.
"""

from __future__ import annotations

import pytest

from aspyx_event.errors import ProviderError
from aspyx_event.provider import Subscription
from aspyx_event.providers.stomp import STRATEGIES, StompProvider

GROUP = Subscription("Orders", "billing.host-1", durable=True)
PER_PROCESS = Subscription("Orders", "cache-host.1", per_process=True)


@pytest.mark.parametrize(
    ("broker", "queue", "dead_letters"),
    [
        ("rabbitmq", "/amq/queue/Orders::billing.host-1", "/queue/Orders::billing.host-1.dlq"),
        ("activemq", "/queue/Consumer.billing_host-1.Orders", "/queue/Orders::billing_host-1.dlq"),
        ("artemis", "Orders::billing.host-1", "Orders.billing.host-1.dlq"),
    ],
)
def test_send_to_queue_and_dead_letter_destinations(
    broker: str, queue: str, dead_letters: str
) -> None:
    strategy = STRATEGIES[broker]
    destination, headers = strategy.queue_target(GROUP)
    assert destination == queue
    assert headers["persistent"] == "true"
    destination, headers = strategy.queue_target(GROUP.dead_letter())
    assert destination == dead_letters
    assert headers["persistent"] == "true"
    # a dead-letter subscription consumes exactly where the dead letters were sent
    assert strategy.subscribe_spec(GROUP.dead_letter(), 1000)[0] == dead_letters
    own = PER_PROCESS.dead_letter()  # a per-process group's DLQ is an ordinary queue
    assert strategy.subscribe_spec(own, 1000)[0] == strategy.queue_target(own)[0]


def test_artemis_sends_to_queues_with_their_routing_type() -> None:
    artemis = STRATEGIES["artemis"]
    assert artemis.queue_target(GROUP)[1]["destination-type"] == "MULTICAST"
    assert artemis.queue_target(GROUP.dead_letter())[1]["destination-type"] == "ANYCAST"
    assert artemis.subscribe_spec(GROUP.dead_letter(), 0)[1] == {"subscription-type": "ANYCAST"}


def test_rabbitmq_dead_letter_subscription_declares_no_arguments() -> None:
    # the SEND to /queue/E::G.dlq declares it without arguments: the SUBSCRIBE must match
    rabbitmq = STRATEGIES["rabbitmq"]
    spec = rabbitmq.subscribe_spec(PER_PROCESS.dead_letter(), 1000)
    assert spec == ("/queue/Orders::cache-host.1.dlq", {"prefetch-count": "100"})


@pytest.mark.parametrize("broker", ["activemq", "artemis"])
def test_per_process_groups_have_no_queue_to_send_to(broker: str) -> None:
    with pytest.raises(ProviderError, match="no queue of its own"):
        STRATEGIES[broker].queue_target(PER_PROCESS)
    assert STRATEGIES[broker].queue_target(PER_PROCESS.dead_letter())  # their DLQ is a queue


def test_clone_keeps_every_constructor_argument() -> None:
    original = StompProvider(
        "node-1", "broker.example", 61614, "user", "s3cret", broker="activemq", vhost="v",
        tls=True, ca_file="/ca.pem", cert_file="/c.pem", key_file="/k.pem", send_timeout=3.0,
        connect_timeout=4.0, stop_timeout=5.0, reconnect_delay=0.5, reconnect_max_delay=6.0,
        max_in_flight=9, heartbeat_ms=700, per_process_expiry=0.25,
    )  # fmt: skip
    twin = original.clone()
    assert twin is not original
    assert twin._link is not original._link
    assert twin._link.settings == original._link.settings
    assert (twin.server_name, twin._strategy, twin._expiry_ms) == (
        "node-1",
        STRATEGIES["activemq"],
        250,
    )
    assert "s3cret" not in repr(twin)
    assert "s3cret" not in repr(twin._link.settings)
