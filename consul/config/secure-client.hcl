# A client agent of the secure profile: one per "host" (loopback address); the service
# instances of that host register with it and read through it. Its HTTPS API asks every
# caller for a certificate signed by the cluster's CA (verify_incoming, from
# secure-common.hcl): the services present one through CONSUL_CLIENT_CERT/_KEY.
server = false
