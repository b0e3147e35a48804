# Single-node development agent: server + client in one process, state in memory
# (started with -dev), web UI on. Loopback only. Ports are the defaults
# (HTTP 8500, DNS 8600) unless overridden on the command line.
# Shipped with the library for its pytest plugin (consul_discovery.testing.agent); the
# example cluster reads it too, through the link consul/config/dev.hcl.
bind_addr   = "127.0.0.1"
client_addr = "127.0.0.1"
advertise_addr = "127.0.0.1"

ui_config {
  enabled = true
}

log_level = "INFO"
disable_update_check = true
enable_script_checks = false

# Consul DNS answers (the HAProxy benchmark resolves instances through SRV records)
# must never be cached, or a changed instance set would be seen late.
dns_config {
  service_ttl = { "*" = "0s" }
  node_ttl = "0s"
}
