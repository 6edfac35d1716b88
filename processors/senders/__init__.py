"""Channel senders (contract §6): pure rendering/retry/tokens, one backend module per
channel and provider behind the :class:`~processors.senders.base.Sender` protocol,
the :class:`~processors.senders.service.DeliveryService`, and the Faust wiring in
:mod:`processors.senders.worker`. Importing this package imports no provider library."""
