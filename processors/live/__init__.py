"""The live pipeline: Faust agents on Kafka around the pure core (DESIGN §2–§5, §10)."""
