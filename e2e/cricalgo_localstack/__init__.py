"""cricalgo_localstack."""
