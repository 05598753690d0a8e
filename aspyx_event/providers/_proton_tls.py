"""Private: TLS for the AMQP provider's connection: proton's `SSLDomain` plus OpenSSL's check
of an IP address.

`ssl_domain` runs on the container thread (`BridgeSettings.connect_options`, for every
connection attempt); `check_ip_verification` runs on the thread that creates the provider, so
a configuration this build cannot verify fails at once. Proton 0.40 compares the host with the
certificate's DNS names only; for an IP address this module reaches OpenSSL through ctypes.
"""

from __future__ import annotations

import ctypes
import functools
import ipaddress
from typing import Any

import cproton_ffi  # type: ignore[import-not-found]  # proton's compiled C binding
from proton import SSLDomain

from aspyx_event.errors import ProviderConfigurationError


def ssl_domain(
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    verify_hostname: bool,
    host: str,
) -> Any:
    """A client `SSLDomain`: trusted CAs, peer verification, optional client certificate.

    Proton's own name check (`VERIFY_PEER_NAME`) compares the host with the certificate's DNS
    names and common name only, so it refuses an IP address even when the certificate lists
    it as an IP subjectAltName. For an IP address the domain verifies the chain
    (`VERIFY_PEER`) and OpenSSL checks the address during the same handshake.
    """
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    if ca_file:
        domain.set_trusted_ca_db(ca_file)
    address = ip_literal(host) if verify_hostname else None
    mode = SSLDomain.VERIFY_PEER_NAME if verify_hostname and not address else SSLDomain.VERIFY_PEER
    domain.set_peer_authentication(mode, ca_file)
    if address:
        _expect_ip_address(domain, address)
    if cert_file:
        domain.set_credentials(cert_file, key_file or cert_file, None)
    return domain


def ip_literal(host: str) -> str | None:
    """`host` in the canonical form of an IP address, or None for a DNS name."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def check_ip_verification(host: str) -> None:
    """Fail now if `host` is an IP address that `ssl_domain` cannot verify.

    Raises:
        ProviderConfigurationError: proton's OpenSSL functions are not reachable (e.g. a
            build on Windows' SChannel).
    """
    if ip_literal(host) and _openssl() is None:
        raise ProviderConfigurationError(
            f"verify_hostname=True cannot check the IP address {host!r}: this build of "
            "python-qpid-proton compares DNS names only and its OpenSSL is not reachable."
            "\nHint: connect by a DNS name in the broker's certificate, or pass "
            "verify_hostname=False (the certificate chain is still verified)."
        )


@functools.cache
def _openssl() -> tuple[Any, Any] | None:
    """OpenSSL's `SSL_CTX_get0_param` and `X509_VERIFY_PARAM_set1_ip_asc`, looked up through
    proton's C binding (the OpenSSL proton links, bundled or not), or None."""
    try:
        binding = ctypes.CDLL(cproton_ffi.__file__)
        get_param, set_ip = binding.SSL_CTX_get0_param, binding.X509_VERIFY_PARAM_set1_ip_asc
    except (OSError, AttributeError):
        return None
    get_param.restype, get_param.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    set_ip.restype, set_ip.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]
    return get_param, set_ip


def _expect_ip_address(domain: Any, address: str) -> None:
    """Make OpenSSL require `address` among the peer certificate's IP subjectAltNames.

    Proton has no API for this: the domain's `SSL_CTX` is the first member of proton's
    `pn_ssl_domain_t` (unchanged since 0.x; pyproject pins python-qpid-proton < 0.41), and
    each connection's `SSL` copies the context's verification parameters when it is made.
    """
    functions = _openssl()
    if functions is None:  # check_ip_verification refused this configuration earlier
        raise ProviderConfigurationError(f"cannot verify the IP address {address!r}")
    get_param, set_ip = functions
    ffi = cproton_ffi.ffi
    context = int(ffi.cast("uintptr_t", ffi.cast("void **", domain._domain)[0]))
    param = get_param(context) if context else None
    if not param or set_ip(param, address.encode()) != 1:
        raise ProviderConfigurationError(f"OpenSSL refused to verify the IP address {address!r}")
