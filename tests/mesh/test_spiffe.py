"""SPIFFE service IDs: Consul's two URI forms, the client's match rule, peer certificates."""

from __future__ import annotations

import pytest

from consul_discovery.mesh.errors import PeerIdentityError
from consul_discovery.mesh.spiffe import SpiffeId, peer_spiffe_id, uri_sans

TD = "11111111-2222-3333-4444-555555555555.consul"


def test_parses_and_formats_the_ce_form() -> None:
    uri = f"spiffe://{TD}/ns/default/dc/dc1/svc/web"
    sid = SpiffeId.parse(uri)
    assert (sid.trust_domain, sid.namespace, sid.datacenter, sid.service) == (
        TD, "default", "dc1", "web",
    )  # fmt: skip
    assert sid.partition is None
    assert sid.uri == uri == str(sid)


def test_parses_the_partition_form() -> None:
    sid = SpiffeId.parse(f"spiffe://{TD}/ap/part1/ns/team/dc/dc2/svc/api")
    assert (sid.partition, sid.namespace, sid.datacenter, sid.service) == (
        "part1", "team", "dc2", "api",
    )  # fmt: skip
    assert sid.uri.endswith("/ap/part1/ns/team/dc/dc2/svc/api")


@pytest.mark.parametrize(
    "uri",
    [
        "https://example.com/ns/default/dc/dc1/svc/web",  # not spiffe
        f"spiffe://{TD}/agent/client/dc/dc1/id/node-1",  # an agent's identity, not a service
        f"spiffe://{TD}",  # a trust domain (a CA root's SAN)
        f"spiffe://{TD}/ns/default/dc/dc1/svc/",  # no service name
        "spiffe:///ns/default/dc/dc1/svc/web",  # no trust domain
    ],
)
def test_rejects_what_is_not_a_service_identity(uri: str) -> None:
    with pytest.raises(PeerIdentityError, match="not a"):
        SpiffeId.parse(uri)


def test_same_service_ignores_the_trust_domain_and_case_like_consul() -> None:
    # connect/tls.go verifyServerCertMatchesURI: host replaced, then EqualFold.
    ours = SpiffeId(TD, "default", "dc1", "web")
    assert ours.same_service(SpiffeId("other.consul", "default", "dc1", "web"))
    assert ours.same_service(SpiffeId(TD, "Default", "DC1", "WEB"))
    assert ours.same_service(SpiffeId(TD, "default", "dc1", "web", partition="default"))
    assert not ours.same_service(SpiffeId(TD, "default", "dc1", "api"))
    assert not ours.same_service(SpiffeId(TD, "default", "dc2", "web"))
    assert not ours.same_service(SpiffeId(TD, "team", "dc1", "web"))
    assert not ours.same_service(SpiffeId(TD, "default", "dc1", "web", partition="p2"))


def test_peer_identity_is_the_first_uri_san() -> None:
    cert = {
        "subject": (),
        "subjectAltName": (
            ("DNS", "web.example"),
            ("URI", f"spiffe://{TD}/ns/default/dc/dc1/svc/web"),
            ("URI", f"spiffe://{TD}/ns/default/dc/dc1/svc/other"),
        ),
    }
    assert uri_sans(cert)[0].endswith("/svc/web")
    assert peer_spiffe_id(cert).service == "web"


@pytest.mark.parametrize("cert", [None, {}, {"subjectAltName": (("DNS", "web"),)}])
def test_a_certificate_without_uri_san_has_no_identity(cert: dict | None) -> None:
    with pytest.raises(PeerIdentityError, match="no URI SAN"):
        peer_spiffe_id(cert)
