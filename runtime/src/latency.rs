//! Latency histograms recorded per core (written by the histogram work; stub).
