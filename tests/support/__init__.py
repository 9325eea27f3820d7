"""Test support: settings and secrets, CLI environments, the Kafka broker, reference computations."""
