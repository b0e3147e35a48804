"""consul_connection: the one owner of how to reach Consul.

``ConsulConnection.from_env()`` reads Consul's own environment variables (address,
scheme, token and token file, CA file or directory, client certificate, TLS server name)
with the ``consul`` CLI's meaning; an explicit argument beats the environment. The
registrar, the discovery client, the config client and their async variants all take
one, and none parses the environment itself. Also here: host/port spelling
(``host_port``), what Consul's refusals mean (``acl_denial``) and what a failed call's
transport exception means (``classify_transport_error``, ``describe_transport_error``).
"""

from consul_discovery.connection.addresses import bracket_host, host_port, http_url, parse_address
from consul_discovery.connection.refusals import (
    FILTERED_HEADER,
    AclDenial,
    acl_denial,
    filtered_by_acls,
)
from consul_discovery.connection.settings import (
    DEFAULT_ADDRESS,
    TOKEN_HEADER,
    ConsulConfigError,
    ConsulConnection,
)
from consul_discovery.connection.transport_errors import (
    TransportFailure,
    classify_transport_error,
    describe_transport_error,
    is_http_to_https_port,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "FILTERED_HEADER",
    "TOKEN_HEADER",
    "AclDenial",
    "ConsulConfigError",
    "ConsulConnection",
    "TransportFailure",
    "acl_denial",
    "bracket_host",
    "classify_transport_error",
    "describe_transport_error",
    "filtered_by_acls",
    "host_port",
    "http_url",
    "is_http_to_https_port",
    "parse_address",
]
