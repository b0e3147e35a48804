"""Run the example platform locally: Consul plus every service instance under supervisord."""
