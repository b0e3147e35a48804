# One of the three servers of the loopback failover cluster. Each server gets its own
# node name, data dir and ports on the command line (see tests/harness/cluster.py and
# the Makefile). Loopback only.
server           = true
bootstrap_expect = 3
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
