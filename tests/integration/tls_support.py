"""TLS for the broker tests: throw-away certificates and RabbitMQ TLS listeners added at runtime.

The RabbitMQ of ``scripts/brokers.sh`` has no TLS listener. `tls_listeners` adds them to the
running node with ``rabbitmqctl eval`` (no restart, nothing written to its configuration) and
removes them again, each on 127.0.0.1 and a free port. A restart of RabbitMQ drops them;
`TLSListeners.ensure` adds them again:

* AMQP over TLS (the AMQP 1.0 plugin is served by the core's listeners):
  ``rabbit_networking:start_ssl_listener``, removed by ``stop_tcp_listener``;
* STOMP over TLS: a ``ranch_ssl`` child of ``rabbit_stomp_sup`` built like the STOMP TCP
  listener (whose configuration it reuses), removed with ``supervisor:terminate_child``;
* the management API over HTTPS, because `AMQPProvider` with ``tls=True`` declares its queues
  over HTTPS: a ``rabbit_web_dispatch`` context, removed by ``unregister_context``.

AMQP and STOMP get two listeners each: one presenting a certificate for ``IP:127.0.0.1`` and
``DNS:localhost``, one a certificate of the same CA for another name (hostname checks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from string import Template

import pytest

from tests.conftest import brokers_required
from tests.waiting import all_reachable, reachable

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
WRONG_NAME = "wrong-name.invalid"
RABBITMQ_PORTS = (5672, 61613, 15672)


@dataclasses.dataclass(frozen=True, slots=True)
class KeyPair:
    """A PEM certificate and its unencrypted PEM private key."""

    cert: Path
    key: Path


@dataclasses.dataclass(frozen=True, slots=True)
class Certificates:
    """What `make_certificates` wrote.

    Attributes:
        ca: the CA that signed both server certificates (what a client should trust).
        other_ca: an unrelated CA (a client trusting only it must refuse the broker).
        server: for ``IP:127.0.0.1`` and ``DNS:localhost``.
        wrong_name: signed by `ca`, but only for `WRONG_NAME`.
    """

    ca: KeyPair
    other_ca: KeyPair
    server: KeyPair
    wrong_name: KeyPair


@dataclasses.dataclass(frozen=True, slots=True)
class TLSPorts:
    """The ports of the TLS listeners on 127.0.0.1 (`*_wrong_name`: the wrong-name certificate)."""

    amqp: int
    amqp_wrong_name: int
    stomp: int
    stomp_wrong_name: int
    management: int


def _openssl(*args: str | Path) -> None:
    """Run the openssl command line tool, failing with its output."""
    result = subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


_NEW_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _new_ca(directory: Path, name: str) -> KeyPair:
    """A self-signed CA (P-256 key, valid two days)."""
    pair = KeyPair(directory / f"{name}.pem", directory / f"{name}.key")
    _openssl(
        "req", "-x509", *_NEW_KEY, "-keyout", pair.key, "-out", pair.cert, "-days", "2",
        "-subj", f"/CN=aspyx test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pair


def _new_server(directory: Path, name: str, ca: KeyPair, alt_names: str) -> KeyPair:
    """A server certificate for `alt_names` (a subjectAltName value), signed by `ca`."""
    pair = KeyPair(directory / f"{name}.pem", directory / f"{name}.key")
    request, extensions = directory / f"{name}.csr", directory / f"{name}.ext"
    extensions.write_text(
        f"subjectAltName={alt_names}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    _openssl("req", *_NEW_KEY, "-keyout", pair.key, "-out", request, "-subj", f"/CN={name}")
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca.cert, "-CAkey", ca.key, "-days", "2",
        "-set_serial", str(secrets.randbits(63)), "-extfile", extensions, "-out", pair.cert,
    )  # fmt: skip
    return pair


def make_certificates(directory: Path) -> Certificates:
    """Two unrelated CAs and two server certificates of the first one, in `directory`."""
    ca = _new_ca(directory, "ca")
    return Certificates(
        ca=ca,
        other_ca=_new_ca(directory, "other-ca"),
        server=_new_server(directory, "server", ca, f"IP:{HOST},DNS:localhost"),
        wrong_name=_new_server(directory, "wrong-name", ca, f"DNS:{WRONG_NAME}"),
    )


_START = Template("""
Good = [{cacertfile, $ca}, {certfile, $cert}, {keyfile, $key}],
Wrong = [{cacertfile, $ca}, {certfile, $wrong_cert}, {keyfile, $wrong_key}],
_ = rabbit_networking:ensure_ssl(),
ok = rabbit_networking:start_ssl_listener({"127.0.0.1", $amqp}, Good, 1),
ok = rabbit_networking:start_ssl_listener({"127.0.0.1", $amqp_wrong_name}, Wrong, 1),
[Conf | _] = [C || {Id, _, _, _} <- supervisor:which_children(rabbit_stomp_sup),
    {ok, #{start := {_, _, [_, _, ranch_tcp, _, _, C | _]}}}
        <- [supervisor:get_childspec(rabbit_stomp_sup, Id)]],
{ok, Sock} = application:get_env(rabbitmq_stomp, tcp_listen_options),
Stomp = fun(Port, Ssl) ->
    [Addr] = rabbit_networking:tcp_listener_addresses({"127.0.0.1", Port}),
    {ok, _} = supervisor:start_child(rabbit_stomp_sup, rabbit_networking:tcp_listener_spec(
        rabbit_stomp_listener_sup, Addr, Sock ++ Ssl, ranch_ssl, rabbit_stomp_client_sup, Conf,
        'stomp/ssl', 1, 1, "STOMP TLS listener")),
    ok end,
ok = Stomp($stomp, Good),
ok = Stomp($stomp_wrong_name, Wrong),
{ok, _} = rabbit_web_dispatch:register_context_handler('aspyx_tls_$management',
    [{port, $management}, {ip, "127.0.0.1"}, {ssl, true}, {ssl_opts, Good},
     {cowboy_opts, [{sendfile, false}]}],
    "", rabbit_mgmt_dispatcher:build_dispatcher([]), "aspyx TLS test"),
ok.
""")

_STOP = Template("""
Stomp = fun(Port) ->
    Id = rabbit_misc:tcp_name(rabbit_stomp_listener_sup, {127, 0, 0, 1}, Port),
    {catch supervisor:terminate_child(rabbit_stomp_sup, Id),
     catch supervisor:delete_child(rabbit_stomp_sup, Id)} end,
{catch rabbit_networking:stop_tcp_listener({"127.0.0.1", $amqp}),
 catch rabbit_networking:stop_tcp_listener({"127.0.0.1", $amqp_wrong_name}),
 Stomp($stomp), Stomp($stomp_wrong_name),
 catch rabbit_web_dispatch:unregister_context('aspyx_tls_$management')}.
""")


def _erlang_string(path: Path) -> str:
    """`path` as an Erlang string literal."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rabbitmqctl(*args: str) -> str:
    """Run rabbitmqctl against the node of scripts/brokers.sh; its output."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "brokers.sh"), "rabbitmqctl", *args],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {args[0]} failed: {result.stdout}{result.stderr}".strip())
    return result.stdout.strip()


def _rabbitmqctl_eval(expression: str) -> str:
    """Evaluate `expression` on the running RabbitMQ node; its printed result."""
    return _rabbitmqctl("eval", expression)


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports on 127.0.0.1 that nothing listens on right now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def _substitutions(certificates: Certificates, ports: TLSPorts) -> dict[str, object]:
    return {
        "ca": _erlang_string(certificates.ca.cert),
        "cert": _erlang_string(certificates.server.cert),
        "key": _erlang_string(certificates.server.key),
        "wrong_cert": _erlang_string(certificates.wrong_name.cert),
        "wrong_key": _erlang_string(certificates.wrong_name.key),
        **dataclasses.asdict(ports),
    }


class TLSListeners:
    """RabbitMQ's TLS listeners (see the module docstring) on ports chosen once.

    Attributes:
        certificates: what the listeners present, and the CAs for the clients.
        ports: where they listen on 127.0.0.1.
    """

    def __init__(self, certificates: Certificates) -> None:
        self.certificates = certificates
        self.ports = TLSPorts(*_free_ports(len(dataclasses.fields(TLSPorts))))
        self._values = _substitutions(certificates, self.ports)

    def start(self) -> None:
        """Add the listeners to the running node (what did start is removed on failure).

        Raises:
            RuntimeError: rabbitmqctl failed or a listener did not start.
        """
        try:
            result = _rabbitmqctl_eval(_START.substitute(self._values))
            if result != "ok":
                raise RuntimeError(f"starting RabbitMQ's TLS listeners returned {result}")
        except BaseException:
            with contextlib.suppress(RuntimeError):  # report the cause, not the cleanup
                _rabbitmqctl_eval(_STOP.substitute(self._values))
            raise

    def stop(self) -> None:
        """Remove the listeners.

        Raises:
            RuntimeError: a listener still accepts connections afterwards.
        """
        try:
            outcome = _rabbitmqctl_eval(_STOP.substitute(self._values))
        except RuntimeError as exc:  # e.g. the node is restarting, which drops them as well
            outcome = str(exc)
        left = [port for port in dataclasses.astuple(self.ports) if reachable(port)]
        if left:
            raise RuntimeError(f"TLS listeners on {left} survived their removal: {outcome}")

    def ensure(self) -> None:
        """Add the listeners again if RabbitMQ lost them (another test restarted it)."""
        if all(map(reachable, dataclasses.astuple(self.ports))):
            return
        require_rabbitmq()
        _rabbitmqctl("await_startup", "--timeout", "60")  # its ports open before its apps run
        with contextlib.suppress(RuntimeError):  # the rest of a half-lost set
            _rabbitmqctl_eval(_STOP.substitute(self._values))
        self.start()


@contextlib.contextmanager
def tls_listeners(certificates: Certificates) -> Iterator[TLSListeners]:
    """RabbitMQ's TLS listeners, started now and removed again on exit."""
    listeners = TLSListeners(certificates)
    listeners.start()
    try:
        yield listeners
    finally:
        listeners.stop()


def handshake(port: int, ca: Path, server_hostname: str, check_hostname: bool = True) -> None:
    """Complete a TLS handshake with the listener on `port`, verifying its chain against `ca`.

    Raises:
        ssl.SSLCertVerificationError: the certificate does not verify.
    """
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = check_hostname
    with (
        socket.create_connection((HOST, port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=server_hostname),
    ):
        pass


def require_rabbitmq() -> None:
    """Skip, or fail when ``BROKERS_REQUIRED=1``, unless RabbitMQ's ports accept connections.

    Waits up to 90 s when brokers are required: another test may be restarting RabbitMQ.
    """
    if not all_reachable(RABBITMQ_PORTS, 90 if brokers_required() else 0):
        message = f"RabbitMQ is not reachable on {HOST}:{RABBITMQ_PORTS}"
        if brokers_required():
            pytest.fail(message)
        pytest.skip(f"{message}. Hint: bash scripts/brokers.sh start")
