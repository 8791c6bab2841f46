"""The live dashboard (``rrr-ui``, ``just ui``): one web page with the system's positions, PnL, equity curve,
latest orders and fills, risk, and the health, throughput and handler times of every instance, pushed to the
browser as they change.

It reads, and changes nothing but by its halt button: PostgreSQL as ``rrr_reader`` (``database``), NATS as
the ``ui`` user, which may listen to heartbeats and ask for discovery's STATS (``health``). The newest value of
each part of the page is held once (``board``) and sent to at most ``max_clients`` browsers, each at most
``push_hz`` times a second (``hub``); the web edge checks every request (``web``).
"""
