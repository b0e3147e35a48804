# One of the three servers of the secure profile (see secure-common.hcl).
server           = true
bootstrap_expect = 3

ui_config {
  enabled = true
}

# The HTTPS API of the servers does not ask callers for a client certificate: the
# operator's browser (the UI) has none, and every API call is authorised by its ACL
# token anyway. RPC and the client agents' HTTPS API keep verify_incoming on.
tls {
  https {
    verify_incoming = false
  }
}
