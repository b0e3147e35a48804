# Shared by every agent of the secure cluster profile (`make run-cluster PROFILE=secure`):
# ACLs default-deny, TLS on RPC and the HTTPS API (plain HTTP off), gossip encryption.
# The per-agent parts (node name, loopback address, ports, data dir, certificate paths,
# the gossip key, retry_join) are generated under .run/secure/consul/<agent>/agent.hcl
# by services/cluster/secure.py, mode 0600. Loopback only.
datacenter           = "dc1"
log_level            = "INFO"
disable_update_check = true
enable_script_checks = false

acl {
  enabled                  = true
  default_policy           = "deny"
  # A client agent that loses the servers keeps using the tokens it has resolved.
  down_policy              = "extend-cache"
  # Agent tokens set through the API (the tooling does, after bootstrap) survive a
  # restart: they are kept in the agent's data dir, with its services and checks.
  enable_token_persistence = true
}

tls {
  defaults {
    verify_incoming = true
    verify_outgoing = true
  }
  internal_rpc {
    verify_server_hostname = true
  }
}

# Agents start together: one that finds no server yet tries again soon (default 30s).
retry_interval = "1s"

# A restarted agent keeps its place in the cluster (and its services): no leave on stop.
leave_on_terminate      = false
skip_leave_on_interrupt = true

# Fast elections for demos and drills on one machine.
performance {
  raft_multiplier = 1
}
