"""The console scripts besides ``cnnbench`` itself: cnnbench-inspect, cnnbench-report, cnnbench-visualize."""
