"""cricalgo_workload."""
