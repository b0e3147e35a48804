# A server agent that keeps its state in a data dir: one alone (a restart keeps every
# registration) or one of a loopback cluster. Each server gets its node name, data dir,
# ports and -bootstrap-expect on the command line (consul_discovery.testing.agent; the
# project's 3-server cluster: tests/harness/cluster.py). Loopback only.
server           = true
bind_addr        = "127.0.0.1"
client_addr      = "127.0.0.1"
advertise_addr   = "127.0.0.1"

ui_config {
  enabled = true
}

log_level            = "INFO"
disable_update_check = true
leave_on_terminate   = false
skip_leave_on_interrupt = true

# Fast elections for tests and demos on one machine.
performance {
  raft_multiplier = 1
}
