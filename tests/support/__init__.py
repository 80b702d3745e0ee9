"""What the tests share: running Locust (runs), fault and TLS servers (faults, certs), own-model inputs,
network namespaces, the report page reader, and the locustfiles and sweep results the tests run or read."""
