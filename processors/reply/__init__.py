"""Reply by email (DESIGN §7): inbound adapters, the pure reply decision, the reply agent."""
