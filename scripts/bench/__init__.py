"""Speed measured: training throughput and MFU, decoding, threads per process, host memory."""
