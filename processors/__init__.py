"""chat-notifier: a Kafka-native notification processor for chat products."""

__version__ = "0.1.0"
