"""Reply by email (contract §7): inbound adapters, the pure reply decision, the reply agent."""
