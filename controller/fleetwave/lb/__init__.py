"""Load-balancer drivers. One module per balancer behind :class:`base.LoadBalancer`."""
