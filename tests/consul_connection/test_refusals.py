"""Consul's refusals in words: which permission, on what, for which call; never the token."""

from consul_discovery.connection import acl_denial, filtered_by_acls


def test_acl_denial_names_permission_resource_and_call():
    body = (
        "Permission denied: token with AccessorID 'a1b2c3' lacks permission "
        "'service:write' on \"order-service\""
    )
    denial = acl_denial(body, "register order-service-1")
    assert (denial.permission, denial.resource, denial.accessor) == (
        "service:write",
        "order-service",
        "a1b2c3",
    )
    text = str(denial)
    assert "service:write" in text and "order-service" in text and "register" in text


def test_acl_denial_without_details_still_says_what_was_denied():
    denial = acl_denial("Permission denied", "read the catalog")
    assert denial.permission is None
    assert "read the catalog" in str(denial)


def test_filtered_header_is_case_insensitive():
    assert filtered_by_acls({"x-consul-results-filtered-by-acls": "true"})
    assert not filtered_by_acls({"X-Consul-Results-Filtered-By-ACLs": "false"})
    assert not filtered_by_acls({})
