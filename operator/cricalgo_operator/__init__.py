"""cricalgo_operator."""
