"""The live pipeline: Faust agents on Kafka around the pure core (contract §2–§5, §10)."""
