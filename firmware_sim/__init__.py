"""Virtual devices and sorting-centre scenarios with ground truth, for tests and demos."""
