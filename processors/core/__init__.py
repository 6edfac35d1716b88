"""The pure core: batching, presence, decisions and the replay engine.

Nothing in this package imports Faust, Kafka, a channel library, the clock or the
environment (a test scans the imports). Every function takes plain records and
``now`` in epoch milliseconds and returns plain records, so the live agents and
``chat-notifier replay`` run exactly the same rules.
"""
